"""``mipart-webhook``: the admission webhook (HTTPS) for mipart-annotated pods."""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path

import structlog

from mipart.cluster.http import JsonServer
from mipart.runtime import logs
from mipart.runtime.signals import wait_for_stop
from mipart.webhook.mutate import Webhook

log = structlog.get_logger("mipart.webhook")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-webhook",
        description="Admission webhook: mutate and validate pods that carry mipart.io/* "
        "annotations. Serves POST /mutate and /validate over HTTPS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--listen", default="0.0.0.0:8443", help="host:port")
    p.add_argument("--tls-cert", type=Path, required=True, help="serving certificate (PEM)")
    p.add_argument("--tls-key", type=Path, required=True, help="serving key (PEM)")
    p.add_argument("--scheduler-name", default="mipart-scheduler")
    logs.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_from(args)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as err:
        print(f"mipart-webhook: cannot load --tls-cert/--tls-key: {err}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    hook = Webhook(scheduler_name=args.scheduler_name)
    server = JsonServer(host, int(port), tls=tls)
    server.post_routes.update({"/mutate": hook.mutate, "/validate": hook.validate})
    server.get_routes["/healthz"] = lambda: (200, "text/plain", b"ok")
    server.start()
    log.info("webhook.serving", listen=f"{host}:{server.port}")
    wait_for_stop()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
