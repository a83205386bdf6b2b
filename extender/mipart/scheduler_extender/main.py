"""``mipart-extender``: the kube-scheduler extender that places pods on MI300X partitions."""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import threading
from pathlib import Path

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mipart.cluster.http import JsonServer
from mipart.cluster.reporter import EventReporter
from mipart.cluster.view import ClusterState
from mipart.contract.resources import EXTENDER_COMPONENT
from mipart.kube.api import KubeApi
from mipart.runtime import logs
from mipart.runtime.signals import wait_for_stop
from mipart.scheduler_extender.leadership import Leadership
from mipart.scheduler_extender.metrics import ExtenderMetrics
from mipart.scheduler_extender.verbs import Verbs

log = structlog.get_logger("mipart.scheduler_extender")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-extender",
        description=(
            "kube-scheduler extender (filter, prioritize, bind, preempt) that places pods "
            "annotated with mipart.io/* onto MI300X partitions, reading GPUNodes and pods."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8888",
        help="host:port; loopback by default: the scheduler is a sidecar",
    )
    p.add_argument("--kubeconfig", type=Path, help="default: the pod's service account")
    p.add_argument(
        "--scheduler-name",
        default="mipart-scheduler",
        help="the profile whose pods this extender sees",
    )
    p.add_argument(
        "--scheduler-lease",
        default="mipart-system/mipart-scheduler",
        help="namespace/name of the sidecar kube-scheduler's leader Lease to follow, or 'none'",
    )
    p.add_argument(
        "--identity-prefix",
        default=os.environ.get("POD_NAME", socket.gethostname()),
        help="our kube-scheduler's host name (its pod's name): its lease identity is this, '_' "
        "and a UUID",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        help="seconds after which a GPUNode heartbeat is stale",
    )
    logs.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_from(args)
    host, _, port = args.listen.rpartition(":")
    api = KubeApi.connect(args.kubeconfig)
    metrics = ExtenderMetrics()
    cluster = ClusterState(api, scheduler_name=args.scheduler_name, stale_after_s=args.stale_after)
    lease = None if args.scheduler_lease == "none" else args.scheduler_lease
    leadership = Leadership(api, cluster, lease=lease, identity_prefix=args.identity_prefix)
    events = EventReporter(api, component=EXTENDER_COMPONENT, instance=args.identity_prefix)
    verbs = Verbs(
        cluster,
        api,
        metrics,
        serving=leadership.refusal,
        report_unschedulable=lambda pod, msg: events.warn(pod, "NoPartitionFits", msg),
    )
    server = JsonServer(
        host or "127.0.0.1",
        int(port),
        on_drop=lambda reason: metrics.dropped.labels(reason).inc(),
    )
    # kube-scheduler waits on these inside its scheduling loop; bind and preempt call the API
    # server or walk victims, and run on the route threads.
    server.inline_routes.update({"/filter", "/prioritize"})
    server.post_routes.update(
        {
            "/filter": verbs.filter,
            "/prioritize": verbs.prioritize,
            "/bind": verbs.bind,
            "/preempt": verbs.preempt,
        }
    )

    def healthz() -> tuple[int, str, bytes]:
        return 200, "text/plain", b"ok"

    def readyz() -> tuple[int, str, bytes]:
        refusal = leadership.refusal() if cluster.synced else "cache not warm"
        metrics.serving.set(0 if refusal else 1)
        return (
            (200, "text/plain", b"ok") if refusal is None else (503, "text/plain", refusal.encode())
        )

    def metrics_page() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)

    def allocations_page() -> tuple[int, str, bytes]:
        """What this extender believes is allocated (for checks against the API server)."""
        held = cluster.locked(lambda view: view.allocations())
        body = {
            a.pod_uid: {
                "pod": a.pod,
                "node": a.node,
                "partitions": list(a.partition_ids),
                "memoryBytes": a.memory_bytes,
                "sharing": a.sharing.value,
            }
            for a in held
        }
        return 200, "application/json", orjson.dumps(body)

    server.get_routes.update(
        {
            "/healthz": healthz,
            "/readyz": readyz,
            "/metrics": metrics_page,
            "/debug/allocations": allocations_page,
        }
    )
    server.loopback_only.add("/debug/allocations")
    cluster.start()
    threading.Thread(target=_freeze_after_sync, args=(cluster,), daemon=True).start()
    server.start()
    log.info(
        "extender.serving",
        listen=f"{host}:{server.port}",
        lease=lease,
        identity=args.identity_prefix,
    )
    wait_for_stop()
    server.stop()
    cluster.stop()
    return 0


def _freeze_after_sync(cluster: ClusterState) -> None:
    """The view holds 10^5-10^6 long-lived objects once synced; moving them out of the
    collector's reach keeps full collections (100 ms and more) out of filter's p99."""
    if cluster.wait_synced(600):
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
