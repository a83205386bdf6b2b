"""QoS queue: how fast latency pods are bound while hundreds of batch pods wait.

On the real control plane (kube-apiserver, kube-scheduler with the extender, kwok nodes) with
a mipart daemon over emulated MI300X per node, the webhook and mipart-controller, each as its
own service account: N batch pods are queued at once, then M latency pods arrive. Prints the
latency pods' creation-to-bind p50/p95/max, the batch pods' (which the queue releases at the
controller's rate), and how many waiting batch pods were bound before the last latency pod.
A benchmark, not a test: it prints figures and never fails on them.

    hack/bench/queue_latency.py [--batch 300] [--latency 5] [--release-rate 20] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hack.bench.report import machine, print_table
from hack.devcluster import kube, queue_scenario
from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane, print_progress
from hack.devcluster.stack import Stack

STATE_DIR = REPO_ROOT / ".run" / "bench-queue-cluster"
EMULATOR = REPO_ROOT / "hack" / "amdsmi-emulator" / "build"
NAMESPACE = "bench-queue"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--latency", type=int, default=5)
    parser.add_argument("--release-rate", type=float, default=20.0)
    parser.add_argument("--nodes", type=int, default=4, help="kwok nodes, 110 pods each")
    parser.add_argument("--quick", action="store_true", help="60 batch pods, 2 nodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.nodes = 60, 2
    plane = ControlPlane(STATE_DIR)
    plane.start(nodes=args.nodes, progress=print_progress)
    api = plane.api_client()
    work = Path(tempfile.mkdtemp(prefix="mipart-bench-queue-"))
    stack = Stack(plane, EMULATOR, work)
    try:
        for name in plane.node_names[: args.nodes]:
            stack.start_daemon(name)
        stack.wait_published(api)
        stack.start_webhook(api)
        stack.start_extender()
        burst = str(max(1, int(args.release_rate)))
        stack.start_controller("--release-rate", str(args.release_rate), "--release-burst", burst)
        kube.core(api).create_namespace({"metadata": {"name": NAMESPACE}})
        run = queue_scenario.run(api, NAMESPACE, batch=args.batch, latency=args.latency)
    finally:
        stack.stop(api)
        plane.stop()
    rows = []
    for label, prefix in (("latency", "latency-"), ("batch", "batch-")):
        waits = run.creation_to_bind(prefix)
        rows.append(
            [
                label,
                len(waits),
                round(statistics.median(waits), 2),
                round(percentile(waits, 0.95), 2),
                round(waits[-1], 2),
            ]
        )
    print(f"\nQoS queue: {machine()}; {args.nodes} nodes x 8 MI300X (SPX), 4Gi pods")
    print(f"release rate {args.release_rate}/s; batch pods waiting when latency pods came: "
          f"{len(run.gated_at_latency)}; of those bound before the last latency pod: "
          f"{len(run.overtaken_by('latency-'))}")  # fmt: skip
    print_table(["class", "pods", "p50 s", "p95 s", "max s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
