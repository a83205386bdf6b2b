"""hack/demo: mipart on a local control plane, start to finish.

Four kwok nodes with a real mipart daemon each over 8 emulated MI300X (the real amdsmi
package on the emulated libamd_smi), in the mixed layouts a cluster has after an operator
picked one per node pool; the admission webhook, the scheduler extender in kube-scheduler
and mipart-controller, each as its own service account. Then the story:

  (a) the sample workloads of manifests/examples are placed on partitions, a limit each;
  (b) a batch fleet of Llama-70B replicas wants more SPX GPUs than exist: the controller
      re-partitions idle GPUs to SPX for them, and the replicas that still fit nowhere wait
      in the queue with a reason;
  (c) a latency pod arrives when the cluster is full and preempts a batch replica within
      the fleet's PodDisruptionBudget; the replica goes back to the queue;
  (d) mipart-queue shows the queue; (e) mipart-smi shows a node's partitions and pods;
  (f) a summary against whole-GPU allocation.

  hack/demo            run it, then stop everything it started
  hack/demo --keep     leave it all running to explore; prints the KUBECONFIG to use
  hack/demo down       stop what `hack/demo --keep` left running
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane, print_progress
from hack.devcluster.emulator import build_emulator
from hack.devcluster.scenario import LAYOUTS, Narrator, Story
from hack.devcluster.stack import Stack, stop_recorded

DEFAULT_DIR = REPO_ROOT / ".run" / "demo"
NAMESPACE = "default"


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def out(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", nargs="?", choices=["run", "down"], default="run")
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"state and logs (default {DEFAULT_DIR})"
    )
    args = parser.parse_args(argv)
    if args.action == "down":
        return down(args.dir)
    return run(args.dir, keep=args.keep)


def run(workdir: Path, *, keep: bool) -> int:
    started = time.monotonic()
    down(workdir, quiet=True)  # what an earlier --keep left behind
    emulator = build_emulator()
    plane = ControlPlane(workdir / "cluster")
    say(
        "a local control plane: kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok"
    )
    plane.start(nodes=len(LAYOUTS), detach=keep, progress=print_progress)
    api = plane.api_client()
    stack = Stack(plane, emulator, workdir / "nodes", detach=keep)
    story = Story(plane, api, stack, NAMESPACE, Narrator(say=say, out=out))
    try:
        story.start()
        story.place_samples()
        story.fill_with_batch()
        story.latency_arrives()
        story.show_node(plane.node_names[1])
        story.summary()
        out(f"\n(the demo took {time.monotonic() - started:.0f} s)")
    except BaseException:
        print(f"\nthe demo failed; logs are in {workdir}", file=sys.stderr)
        keep = False
        raise
    finally:
        if keep:
            stack.record(workdir / "stack.json")
            say("left running; to explore it:")
            out(f"export KUBECONFIG={plane.kubeconfig}")
            out(f"alias kubectl={plane.binaries('kubectl')}")
            out("kubectl get gpunodes; kubectl get pods -o wide")
            first = next(iter(stack.daemons.values()), None)
            if first is not None:
                out(f".venv/bin/mipart-smi --socket {first.socket}")
            out(".venv/bin/mipart-queue")
            out("hack/demo down        # stops all of it")
        else:
            stack.stop(api)
            plane.stop()
    return 0


def down(workdir: Path, *, quiet: bool = False) -> int:
    """Stop the daemons and components a --keep run recorded, then its control plane."""
    stopped = stop_recorded(workdir / "stack.json")
    plane = ControlPlane.load(workdir / "cluster")
    if plane is not None:
        plane.stop()
        stopped.append("the control plane")
    if not quiet:
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
