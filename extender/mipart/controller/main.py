"""``mipart-controller``: releases pods held by the ``mipart.io/queue`` scheduling gate in QoS
order (latency, standard, batch; FIFO with aging inside a class), only when the placement
engine finds room for them, at a bounded rate; preempts lower classes for latency pods; and
re-partitions idle GPUs (GPUNode.spec) for what waits. One replica: its state is in the API
(the pods' gates, the GPUNodes' spec and change times)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from mipart.cluster.reporter import EventReporter
from mipart.cluster.view import ClusterState
from mipart.contract.resources import CONTROLLER_COMPONENT
from mipart.controller.releaser import DEFAULT_HOLD_S, Releaser, ReleaseRate
from mipart.controller.repartition import Repartitioner
from mipart.kube.api import KubeApi
from mipart.planner import PlannerPolicy
from mipart.queue import QueuePolicy
from mipart.runtime import logs
from mipart.runtime.signals import wait_for_stop

log = structlog.get_logger("mipart.controller")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-controller",
        description=(
            "Release pods waiting behind the mipart.io/queue scheduling gate (added by the "
            'webhook to pods annotated mipart.io/queue: "true") in QoS order, when they fit.'
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, help="default: the pod's service account")
    p.add_argument(
        "--scheduler-name", default="mipart-scheduler", help="the profile of queued pods"
    )
    p.add_argument(
        "--release-rate", type=float, default=20.0, help="pods released per second, at most"
    )
    p.add_argument("--release-burst", type=int, default=20, help="pods released at once, at most")
    p.add_argument(
        "--bypass-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a pod that has waited this long is no longer passed by later pods that fit",
    )
    p.add_argument(
        "--retry-refused-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a pod whose eviction a PodDisruptionBudget refused is not chosen again for this long",
    )
    p.add_argument(
        "--repartition",
        choices=["on", "off"],
        default="on",
        help="let the planner change idle GPUs' modes (GPUNode.spec) for what waits",
    )
    p.add_argument(
        "--plan-settle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="demand younger than this causes no re-partition",
    )
    p.add_argument(
        "--plan-cooldown",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a GPU that changed waits this long before it changes again",
    )
    p.add_argument(
        "--plan-max-changing",
        type=int,
        default=8,
        help="GPUs re-partitioned at once in the whole cluster, at most",
    )
    p.add_argument(
        "--plan-aging",
        type=float,
        default=PlannerPolicy().aging_s,
        metavar="SECONDS",
        help="within its QoS class the planner places the largest pods first until a pod has "
        "waited this long; from then on it goes first, oldest first ('inf': largest first "
        "always, which packs more memory but bounds no wait; docs/planner.md)",
    )
    p.add_argument(
        "--plan-hold",
        type=float,
        default=DEFAULT_HOLD_S,
        metavar="SECONDS",
        help="a released pod is held this long to the partitions the planner counted it on "
        "(mipart.io/planned-partitions): the extender binds it there or nowhere; after that, "
        "to any partition of its planned mode",
    )
    p.add_argument(
        "--defragment",
        choices=["on", "off"],
        default="off",
        help="let the planner evict the batch pods of a GPU they hold at most half of, when "
        "waiting latency or standard pods could use the GPU whole (PodDisruptionBudgets "
        "apply; Events on the GPUNode and the pods; docs/planner.md)",
    )
    p.add_argument(
        "--metrics-address",
        default="127.0.0.1:9402",
        help="host:port for Prometheus metrics, or 'off'",
    )
    p.add_argument("--stale-after", type=float, default=60.0, help="GPUNode heartbeat age limit")
    logs.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = [
        f"{flag}: must be greater than 0"
        for flag, value in (
            ("--release-rate", args.release_rate),
            ("--release-burst", args.release_burst),
            ("--bypass-after", args.bypass_after),
            ("--retry-refused-after", args.retry_refused_after),
            ("--plan-max-changing", args.plan_max_changing),
            ("--plan-hold", args.plan_hold),
            ("--plan-aging", args.plan_aging),
        )
        if not value > 0  # NaN too
    ]
    if problems:
        print(f"mipart-controller: {'; '.join(problems)}", file=sys.stderr)
        return 2
    logs.configure_from(args)
    api = KubeApi.connect(args.kubeconfig)
    state = ClusterState(api, scheduler_name=args.scheduler_name, stale_after_s=args.stale_after)
    identity = os.environ.get("POD_NAME", socket.gethostname())
    events = EventReporter(api, component=CONTROLLER_COMPONENT, instance=identity)
    registry = CollectorRegistry()
    repartitioner = None
    if args.repartition == "on":
        repartitioner = Repartitioner(
            api,
            state,
            registry,
            policy=PlannerPolicy(
                settle_s=args.plan_settle,
                cooldown_s=args.plan_cooldown,
                max_changing=args.plan_max_changing,
                aging_s=args.plan_aging,
                defragment=args.defragment == "on",
            ),
            stale_after_s=args.stale_after,
            identity=identity,
            events=events,
            retry_refused_s=args.retry_refused_after,
        )
    releaser = Releaser(
        api,
        state,
        events,
        registry,
        rate=ReleaseRate(args.release_rate, args.release_burst),
        policy=QueuePolicy(bypass_after_s=args.bypass_after),
        retry_refused_s=args.retry_refused_after,
        # The queue follows the planner's admissions while it plans.
        admissions=None if repartitioner is None else repartitioner.admissions,
        hold_s=args.plan_hold,
    )
    if args.metrics_address != "off":
        host, _, port = args.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    state.start()
    if not state.wait_synced(60):
        log.warning("controller.not_synced", waited_s=60)
    releaser.start()
    if repartitioner is not None:
        repartitioner.start()
    log.info("controller.serving", rate=args.release_rate, burst=args.release_burst)
    wait_for_stop()
    releaser.stop()
    if repartitioner is not None:
        repartitioner.stop()
    state.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
