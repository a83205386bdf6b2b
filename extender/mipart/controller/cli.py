"""``mipart-queue``: the QoS queue as mipart-controller sees it, read from the API server.

The queue is the pods behind the ``mipart.io/queue`` gate, so any client that can list pods
can show it; the order is the controller's own (mipart.queue.order).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mipart.controller.pods import is_gated, queued_pod
from mipart.geometry import Rounding, format_bytes
from mipart.kube.api import KubeApi, KubeError
from mipart.queue import order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-queue",
        description="Show the pods waiting in mipart's QoS queue, in the order they will go.",
    )
    p.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account")
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    p.add_argument("--scheduler-name", default="mipart-scheduler")
    p.add_argument("--json", action="store_true", help="one JSON object per pod, in order")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = f"/api/v1/namespaces/{args.namespace}/pods" if args.namespace else "/api/v1/pods"
    try:
        api = KubeApi.connect(args.kubeconfig)
        pods = api.get(path, fieldSelector=f"spec.schedulerName={args.scheduler_name}")
    except (KubeError, OSError) as err:
        print(f"mipart-queue: cannot list pods: {err}", file=sys.stderr)
        return 1
    queued = order(q for p in pods["items"] if is_gated(p) and (q := queued_pod(p)) is not None)
    now = time.time()
    rows = [
        {
            "position": n,
            "qos": q.qos.value,
            "pod": q.key,
            "waitedSeconds": round(now - q.created, 1),
            "memoryPerPartition": format_bytes(q.request.memory_bytes, Rounding.UP),
            "partitions": q.request.partitions,
        }
        for n, q in enumerate(queued, start=1)
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("the queue is empty")
        return 0
    print(f"{'POS':>4}  {'CLASS':<9} {'WAITED':>8}  {'MEMORY':>8} {'PARTS':>5}  POD")
    for row in rows:
        print(
            f"{row['position']:>4}  {row['qos']:<9} {row['waitedSeconds']:>7}s  "
            f"{row['memoryPerPartition']:>8} {row['partitions']:>5}  {row['pod']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
