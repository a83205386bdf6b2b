"""``mipart-webhook``: the admission webhook (HTTPS) for mipart-annotated pods, and for KServe
InferenceServices that carry mipart annotations (refused at apply when their pods would be).

Its serving certificate comes one of two ways (docs/webhook-certificates.md):

- ``--tls-cert``/``--tls-key``: files (cert-manager's Secret, mounted), read again when they
  change;
- ``--tls-secret``: the webhook makes and renews its own, kept in that Secret, and writes the
  CA into the caBundle of the configurations named ``--ca-bundle-webhooks``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import threading
from pathlib import Path

import structlog

from mipart.cluster import pki
from mipart.cluster.http import JsonServer
from mipart.cluster.tls import FILE_CHECK_S, FileCertificates, Poll, ServingTls
from mipart.kube.api import KubeApi
from mipart.runtime import logs
from mipart.runtime.signals import on_stop
from mipart.webhook.certificates import BuiltinCertificates
from mipart.webhook.inferenceservices import validate_inference_service
from mipart.webhook.mutate import Webhook

log = structlog.get_logger("mipart.webhook")

# How often the builtin mode reads its Secret: to renew what is due and to notice what
# another replica renewed. One GET of a Secret and two of the configurations a minute.
SECRET_CHECK_S = 60.0
MAX_VALIDITY_DAYS = 365


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-webhook",
        description="Admission webhook: mutate and validate pods that carry mipart.io/* "
        "annotations, and validate KServe InferenceServices that do. Serves POST /mutate, "
        "/validate and /validate-inferenceservice over HTTPS. The serving certificate "
        "comes from files (--tls-cert and --tls-key) or is kept by the webhook itself in a "
        "Secret (--tls-secret); exactly one of the two.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--listen", default="0.0.0.0:8443", help="host:port")
    p.add_argument("--scheduler-name", default="mipart-scheduler")
    files = p.add_argument_group("certificate from files (cert-manager)")
    files.add_argument(
        "--tls-cert", type=Path, help="serving certificate (PEM); read again when it changes"
    )
    files.add_argument("--tls-key", type=Path, help="its key (PEM)")
    builtin = p.add_argument_group("certificate kept by the webhook (builtin)")
    builtin.add_argument(
        "--tls-secret",
        metavar="NAMESPACE/NAME",
        help="the kubernetes.io/tls Secret the CA and the serving certificate are kept in "
        "(created when absent)",
    )
    builtin.add_argument(
        "--tls-dns-name",
        help="the Service's DNS name, NAME.NAMESPACE.svc; the certificate also names its "
        "short forms NAME.NAMESPACE and NAME",
    )
    builtin.add_argument(
        "--tls-ip-address",
        action="append",
        default=[],
        metavar="IP",
        help="an IP address for the certificate too (for a webhook the API server calls by "
        "URL at that address); repeatable",
    )
    builtin.add_argument(
        "--tls-validity-days",
        type=int,
        help=f"the serving certificate's lifetime, 1 to {MAX_VALIDITY_DAYS} days (default "
        "90); it is renewed when a third is left",
    )
    # For tests only: a lifetime of seconds, so that a renewal happens while a test waits.
    builtin.add_argument("--tls-validity-seconds", type=int, help=argparse.SUPPRESS)
    builtin.add_argument(
        "--ca-bundle-webhooks",
        metavar="NAME",
        help="the MutatingWebhookConfiguration and ValidatingWebhookConfiguration of this "
        "name get the CA as every webhook's caBundle",
    )
    p.add_argument(
        "--tls-check-interval",
        type=float,
        help=f"seconds between looks at the certificate (default: {FILE_CHECK_S:g} for "
        f"files, {SECRET_CHECK_S:g} for the Secret); SIGHUP looks at once",
    )
    p.add_argument("--kubeconfig", type=Path, help="default: the pod's service account")
    logs.add_arguments(p)
    return p


def _check_tls_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.tls_check_interval is not None and args.tls_check_interval <= 0:
        p.error("--tls-check-interval: more than 0 seconds")
    files = args.tls_cert is not None or args.tls_key is not None
    if files and args.tls_secret is not None:
        p.error("--tls-cert/--tls-key and --tls-secret are mutually exclusive: give one way")
    if not files and args.tls_secret is None:
        p.error("the serving certificate: give --tls-cert and --tls-key, or --tls-secret")
    if files:
        if args.tls_cert is None or args.tls_key is None:
            p.error("--tls-cert and --tls-key go together")
        builtin_only = {
            "--tls-dns-name": args.tls_dns_name,
            "--tls-ip-address": args.tls_ip_address or None,
            "--tls-validity-days": args.tls_validity_days,
            "--tls-validity-seconds": args.tls_validity_seconds,
            "--ca-bundle-webhooks": args.ca_bundle_webhooks,
        }
        given = [flag for flag, value in builtin_only.items() if value is not None]
        if given:
            p.error(f"{', '.join(given)}: only with --tls-secret, not with --tls-cert")
        return
    namespace, slash, name = args.tls_secret.partition("/")
    if not slash or not namespace or not name or "/" in name:
        p.error(f"--tls-secret: {args.tls_secret!r} is not NAMESPACE/NAME")
    if not args.tls_dns_name:
        p.error("--tls-secret needs --tls-dns-name (the name the API server calls)")
    days = args.tls_validity_days
    if days is not None and not 1 <= days <= MAX_VALIDITY_DAYS:
        p.error(f"--tls-validity-days: {days} is not within 1 to {MAX_VALIDITY_DAYS}")
    if args.tls_validity_seconds is not None and args.tls_validity_seconds < 1:
        p.error("--tls-validity-seconds: at least 1")


def policy_from(args: argparse.Namespace) -> pki.Policy:
    validity = dt.timedelta(days=args.tls_validity_days or 90)
    if args.tls_validity_seconds is not None:
        validity = dt.timedelta(seconds=args.tls_validity_seconds)
    return pki.Policy(
        dns_names=pki.service_names(args.tls_dns_name),
        ip_addresses=tuple(args.tls_ip_address),
        validity=validity,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_tls_flags(parser, args)
    logs.configure_from(args)
    host, _, port = args.listen.rpartition(":")
    serving = ServingTls()
    stop = threading.Event()
    # Bound now (a port in use fails at once), served once a certificate is loaded.
    hook = Webhook(scheduler_name=args.scheduler_name)
    server = JsonServer(host, int(port), tls=serving.context)
    server.post_routes.update(
        {
            "/mutate": hook.mutate,
            "/validate": hook.validate,
            "/validate-inferenceservice": validate_inference_service,
        }
    )
    server.get_routes["/healthz"] = lambda: (
        (200, "text/plain", b"ok")
        if serving.loaded
        else (503, "text/plain", b"no serving certificate loaded")
    )

    poll: Poll
    if args.tls_secret is None:
        files = FileCertificates(args.tls_cert, args.tls_key, serving)
        if not files.check():
            print(
                f"mipart-webhook: cannot load --tls-cert/--tls-key ({args.tls_cert}, "
                f"{args.tls_key}): see the log line above",
                file=sys.stderr,
            )
            server.stop()
            return 2
        poll = Poll("tls-files", args.tls_check_interval or FILE_CHECK_S, files.check)
        on_stop(stop.set)
        signal.signal(signal.SIGHUP, lambda *_: poll.wake())
    else:
        namespace, _, name = args.tls_secret.partition("/")
        certificates = BuiltinCertificates(
            KubeApi.connect(args.kubeconfig),
            namespace,
            name,
            policy_from(args),
            serving,
            ca_bundle_webhooks=args.ca_bundle_webhooks,
        )
        poll = Poll("tls-secret", args.tls_check_interval or SECRET_CHECK_S, certificates.check)
        on_stop(stop.set)
        # During start-up a SIGHUP makes the first periodic round run at once.
        signal.signal(signal.SIGHUP, lambda *_: poll.wake())
        # Nothing is served before a certificate is: the readiness probe fails until then.
        if not certificates.start(stop):
            server.stop()
            return 0

    server.start()
    poll.start()
    log.info("webhook.serving", listen=f"{host}:{server.port}", certificate=serving.serial)
    stop.wait()
    poll.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
