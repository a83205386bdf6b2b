"""The demo (hack/demo): a local control plane with four emulated MI300X nodes in mixed
layouts, a mipart daemon on each publishing its GPUNode, the webhook and the extender, and
the sample vLLM workloads from manifests/examples/ placed onto partitions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hack.devcluster import kube
from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane, print_progress
from hack.devcluster.emulator import build_emulator
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack
from mipart.contract.annotations import ALLOCATION, MODEL, SHARING

EXAMPLES = REPO_ROOT / "manifests" / "examples"
LAYOUTS: list[dict[int, str]] = [
    {},  # 8 x SPX: room for 70B models
    dict.fromkeys(range(8), "CPX"),  # 64 x 24 GiB
    dict.fromkeys(range(4), "CPX"),  # half CPX, half SPX
    {**dict.fromkeys(range(4), "QPX"), **dict.fromkeys(range(4, 8), "DPX")},
]


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".run" / "demo")
    args = parser.parse_args()
    emulator = build_emulator()
    plane = ControlPlane(args.dir / "cluster")
    say("starting the control plane (kube-apiserver, etcd, kube-scheduler, kwok)")
    plane.start(nodes=len(LAYOUTS), detach=args.keep, progress=print_progress)
    api = plane.api_client()
    stack = Stack(plane, emulator, args.dir / "nodes")
    try:
        run(plane, api, stack)
    finally:
        if args.keep:
            print(
                f"\nleft running; KUBECONFIG={plane.kubeconfig}; stop with: "
                f"hack/cluster down --dir {args.dir / 'cluster'} (and kill the daemons)"
            )
        else:
            stack.stop(api)
            plane.stop()
    return 0


def run(plane: ControlPlane, api: Any, stack: Stack) -> None:
    say("a mipart daemon per node over 8 emulated MI300X, as service account mipart-daemon")
    for name, layout in zip(plane.node_names, LAYOUTS, strict=True):
        stack.start_daemon(name, layout)
    stack.wait_published(api)
    show(plane, "get", "gpunodes")
    say("the admission webhook and the extender (service account mipart-scheduler)")
    stack.start_webhook(api)
    stack.start_extender()
    say("sample vLLM workloads from manifests/examples/")
    show(
        plane,
        "apply",
        "-f",
        str(EXAMPLES / "vllm-pods.yaml"),
        "-f",
        str(EXAMPLES / "mistral-deployment.yaml"),
    )
    core = kube.core(api)

    def settled() -> bool:
        pods = core.list_namespaced_pod("default").items
        return len(pods) >= 10 and all(p.spec.node_name for p in pods)

    wait_until("the sample pods to be placed", settled, timeout=120)
    time.sleep(2)
    say("where each pod went, and on which partitions (the mipart.io/allocation annotation)")
    for pod in sorted(core.list_namespaced_pod("default").items, key=lambda p: p.metadata.name):
        allocation = json.loads((pod.metadata.annotations or {}).get(ALLOCATION, "{}"))
        print(
            f"  {pod.metadata.name:<26} {pod.spec.node_name or '-':<10} "
            f"{','.join(allocation.get('partitions', [])):<28} "
            f"{allocation.get('memoryBytes', 0) / 2**30:6.1f} GiB/partition  "
            f"{pod.status.phase}"
        )
    show(plane, "get", "gpunodes")
    first = next(iter(stack.daemons.values()))
    say(f"mipart-smi on {plane.node_names[0]}")
    print(first.smi_ok())
    say("13 more Llama-70B pods, each wanting a whole idle SPX GPU: 12 exist, some in use")
    big = yaml.safe_load((EXAMPLES / "vllm-pods.yaml").read_text().split("---")[2])
    for i in range(13):
        big["metadata"]["name"] = f"llama-70b-{i}"
        big["metadata"]["annotations"] = {
            MODEL: "meta-llama/Llama-3.1-70B-Instruct",
            SHARING: "exclusive",
        }
        core.create_namespaced_pod("default", big)

    def waiting_events() -> bool:
        names = plane.kubectl(
            "get", "events", "--field-selector", "reason=NoPartitionFits", "-o", "name"
        ).stdout.split()
        return len(names) >= 2

    wait_until("the waiting pods' Events", waiting_events, timeout=60)
    show(plane, "get", "pods", "--field-selector", "status.phase=Pending")
    show(
        plane,
        "get",
        "events",
        "--field-selector",
        "reason=NoPartitionFits",
        "-o",
        "custom-columns=POD:.involvedObject.name,WHY:.message",
    )


def show(plane: ControlPlane, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = plane.kubectl(*args, check=False)
    sys.stdout.write(result.stdout or result.stderr)


if __name__ == "__main__":
    sys.exit(main())
