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
from mipart.cluster.tls import FILE_CHECK_S, FileCertificates, Poll, ServingTls
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
    tls = p.add_argument_group(
        "TLS with client certificates",
        "Serve the verbs over HTTPS and answer only callers whose certificate --client-ca "
        "signed: kube-scheduler's extender tlsConfig (certFile, keyFile). Use a CA that signs "
        "nothing but that certificate. The files are read again when they change (a Secret "
        "volume); the three go together, and need --status-listen.",
    )
    tls.add_argument("--tls-cert", type=Path, help="the serving certificate (PEM)")
    tls.add_argument("--tls-key", type=Path, help="its key (PEM)")
    tls.add_argument("--client-ca", type=Path, help="the CA of the callers' certificates (PEM)")
    tls.add_argument(
        "--tls-check-interval",
        type=float,
        default=FILE_CHECK_S,
        help="seconds between looks at the three files",
    )
    p.add_argument(
        "--status-listen",
        metavar="HOST:PORT",
        help="serve /healthz, /readyz, /metrics and /debug/allocations here, over plain HTTP, "
        "and only the verbs on --listen (default: everything on --listen). Required with "
        "--tls-cert: the kubelet's probes and Prometheus present no client certificate",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        help="seconds after which a GPUNode heartbeat is stale",
    )
    logs.add_arguments(p)
    return p


def _check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [f for f in ("tls_cert", "tls_key", "client_ca") if getattr(args, f) is not None]
    if given and len(given) < 3:
        p.error(
            "--tls-cert, --tls-key and --client-ca go together (given: "
            + ", ".join("--" + f.replace("_", "-") for f in given)
            + "): TLS without client certificates would still let any caller bind pods"
        )
    if given and args.status_listen is None:
        p.error(
            "--status-listen: required with --tls-cert (the kubelet's probes and Prometheus "
            "present no client certificate)"
        )
    for flag in ("listen", "status_listen"):
        value = getattr(args, flag)
        if value is not None and not value.rpartition(":")[2].isdigit():
            p.error(f"--{flag.replace('_', '-')}: {value!r} is not host:port")
    if args.tls_check_interval <= 0:
        p.error("--tls-check-interval: more than 0 seconds")


def _serving_tls(args: argparse.Namespace) -> tuple[ServingTls, Poll] | None:
    """The TLS the verbs are served with, loaded from the files, and the poll that reloads
    them; None without --tls-cert. Exits 2 when the files do not load at start."""
    if args.tls_cert is None:
        return None
    serving = ServingTls(require_client_certificate=True)
    files = FileCertificates(args.tls_cert, args.tls_key, serving, args.client_ca)
    if not files.check():
        print(
            f"mipart-extender: cannot load --tls-cert/--tls-key/--client-ca ({args.tls_cert}, "
            f"{args.tls_key}, {args.client_ca}): {serving.last_error or 'see the log line above'}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return serving, Poll("tls-files", args.tls_check_interval, files.check)


def _server(address: str, tls: ServingTls | None, metrics: ExtenderMetrics) -> JsonServer:
    host, _, port = address.rpartition(":")
    return JsonServer(
        host or "127.0.0.1",
        int(port),
        tls=tls.context if tls is not None else None,
        on_drop=lambda reason: metrics.dropped.labels(reason).inc(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    logs.configure_from(args)
    tls = _serving_tls(args)
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
    server = _server(args.listen, tls[0] if tls else None, metrics)
    status = server if args.status_listen is None else _server(args.status_listen, None, metrics)
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

    status.get_routes.update(
        {
            "/healthz": healthz,
            "/readyz": readyz,
            "/metrics": metrics_page,
            "/debug/allocations": allocations_page,
        }
    )
    status.loopback_only.add("/debug/allocations")
    cluster.start()
    threading.Thread(target=_freeze_after_sync, args=(cluster,), daemon=True).start()
    server.start()
    if status is not server:
        status.start()
    if tls is not None:
        tls[1].start()
    log.info(
        "extender.serving",
        listen=args.listen,
        status=args.status_listen,
        tls=None
        if tls is None
        else {"certificate": tls[0].serial, "client_ca": str(args.client_ca)},
        lease=lease,
        identity=args.identity_prefix,
    )
    wait_for_stop()
    if tls is not None:
        tls[1].stop()
    server.stop()
    if status is not server:
        status.stop()
    cluster.stop()
    return 0


def _freeze_after_sync(cluster: ClusterState) -> None:
    """The view holds 10^5-10^6 long-lived objects once synced; moving them out of the
    collector's reach keeps full collections (100 ms and more) out of filter's p99."""
    if cluster.wait_synced(600):
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
