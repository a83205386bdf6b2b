"""The webhook's builtin TLS mode on the real apiserver: mipart-webhook, as its own service
account with the chart's RBAC, makes its CA and serving certificate, keeps them in the Secret,
writes the CA into both webhook configurations, and the apiserver then calls it over TLS; a
second replica uses the same CA; a certificate of a few seconds is renewed and served while
the apiserver keeps admitting through the webhook."""

from __future__ import annotations

import base64
import contextlib
import copy
import socket
import ssl
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes.client.exceptions import ApiException

from hack.devcluster import chart, kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import Process, free_ports, wait_until
from mipart.contract.annotations import MEMORY, PARTITIONS

pytestmark = pytest.mark.integration

TIMEOUT = 90.0  # a bound on waiting, not a performance assertion
NAMESPACE = chart.NAMESPACE
SECRET = "mipart-webhook-tls"
DNS_NAME = f"mipart-webhook.{NAMESPACE}.svc"
CONFIGURATIONS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
# The rotation phase: a serving certificate of this many seconds is renewed when a third is
# left (about 20 s after it was made); every replica looks at the Secret every second.
VALIDITY_S = 30


def webhook_rbac() -> list[dict[str, Any]]:
    """The webhook's objects of manifests/charts/mipart/templates/rbac-webhook.yaml, rendered
    by helm with the chart's defaults (tls.mode auto without cert-manager: builtin)."""
    objects = [
        obj
        for obj in chart.default_objects()
        if obj["kind"] in RBAC_KINDS and obj["metadata"]["name"].startswith("mipart-webhook")
    ]
    kinds = {obj["kind"] for obj in objects}
    assert kinds == RBAC_KINDS, f"the chart renders the webhook's {sorted(kinds)}"
    return objects


def configurations(port: int, namespace: str) -> list[dict[str, Any]]:
    """The chart's two webhook configurations, calling the webhook on loopback, with no
    caBundle, and only for the test's namespace."""
    docs = [copy.deepcopy(obj) for obj in chart.default_objects() if obj["kind"] in CONFIGURATIONS]
    assert {d["metadata"]["name"] for d in docs} == {"mipart"}
    for doc in docs:
        doc["metadata"].pop("annotations", None)
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            # The chart points at the in-cluster Service; here the webhook is local.
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}"}
            hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return docs


def start_webhook(control_plane: ControlPlane, port: int, log: Path, *extra: str) -> Process:
    kubeconfig = control_plane.service_account_kubeconfig(NAMESPACE, "mipart-webhook")
    argv = [
        sys.executable, "-m", "mipart.webhook.main",
        f"--listen=127.0.0.1:{port}",
        f"--tls-secret={NAMESPACE}/{SECRET}",
        f"--tls-dns-name={DNS_NAME}",
        # The apiserver calls https://127.0.0.1:port (clientConfig.url).
        "--tls-ip-address=127.0.0.1",
        "--ca-bundle-webhooks=mipart",
        "--tls-check-interval=1",
        f"--kubeconfig={kubeconfig}",
        "--log-format=json",
        *extra,
    ]  # fmt: skip
    return Process.start(f"mipart-webhook:{port}", argv, log, detach=False)


def secret_data(api: Any) -> dict[str, bytes]:
    secret = kube.core(api).read_namespaced_secret(SECRET, NAMESPACE)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def webhooks() -> int:
    """How many webhooks mipart's two configurations hold: each gets the CA."""
    configurations = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    return sum(len(o["webhooks"]) for o in chart.default_objects() if o["kind"] in configurations)


def ca_bundles(api: Any) -> list[str]:
    admission = kube.admission_registration(api)
    bundles = []
    for config in (
        admission.read_mutating_webhook_configuration("mipart"),
        admission.read_validating_webhook_configuration("mipart"),
    ):
        bundles += [hook.client_config.ca_bundle or "" for hook in config.webhooks]
    return bundles


def served(port: int, ca_pem: bytes) -> x509.Certificate:
    """The certificate a new TLS connection to 127.0.0.1:port gets, verified against the CA
    for the address the apiserver calls."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def admits_through_the_webhook(api: Any, namespace: str) -> bool:
    """A pod with a bad annotation is refused with the webhook's own message, and a good one
    is mutated (dry runs: nothing is stored)."""
    core = kube.core(api)
    name = f"probe-{uuid.uuid4().hex[:6]}"
    bad = {
        "metadata": {"name": name, "annotations": {MEMORY: "lots"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
    }
    try:
        core.create_namespaced_pod(namespace, bad, dry_run="All")
        return False
    except ApiException as err:
        if err.status != 422 or MEMORY not in (err.body or "") or "lots" not in (err.body or ""):
            return False
    good = {
        "metadata": {"name": name, "annotations": {MEMORY: "20Gi", PARTITIONS: "1"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
    }
    pod = core.create_namespaced_pod(namespace, good, dry_run="All")
    return bool(pod.spec.scheduler_name == "mipart-scheduler")


def created_lines(process: Process) -> int:
    return process.log.read_text().count('"webhook.certificate.created"')


@pytest.fixture
def clean(api: Any, control_plane: ControlPlane, tmp_path: Path) -> Iterator[list[Process]]:
    """No Secret and no configurations before; the chart's RBAC for the webhook applied; every
    webhook process started into the list stopped after, and what they wrote removed."""
    core, admission = kube.core(api), kube.admission_registration(api)

    def remove() -> None:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_secret(SECRET, NAMESPACE)
        with contextlib.suppress(ApiException):
            admission.delete_mutating_webhook_configuration("mipart")
        with contextlib.suppress(ApiException):
            admission.delete_validating_webhook_configuration("mipart")

    remove()
    control_plane.kubectl(
        "apply", "-f", str(chart.write(webhook_rbac(), tmp_path / "rbac-webhook.yaml"))
    )
    processes: list[Process] = []
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()
        remove()


def test_builtin_certificates_are_made_published_shared_and_renewed(
    api: Any, control_plane: ControlPlane, namespace: str, clean: list[Process], tmp_path: Path
) -> None:
    admission = kube.admission_registration(api)
    port, second_port = free_ports(2)
    for doc in configurations(port, namespace):
        if doc["kind"] == "MutatingWebhookConfiguration":
            admission.create_mutating_webhook_configuration(doc)
        else:
            admission.create_validating_webhook_configuration(doc)
    assert ca_bundles(api) == [""] * webhooks()

    # -- one replica: the Secret, the caBundle, the apiserver calls it -------------------
    first = start_webhook(control_plane, port, tmp_path / "first.log")
    clean.append(first)
    wait_until("the Secret", lambda: bool(secret_data(api)), TIMEOUT, process=first)
    data = secret_data(api)
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    ca = data["ca.crt"]
    assert len(x509.load_pem_x509_certificates(ca)) == 1
    published = base64.b64encode(ca).decode()
    wait_until(
        "every caBundle",
        lambda: ca_bundles(api) == [published] * webhooks(),
        TIMEOUT,
        process=first,
    )
    wait_until(
        "the apiserver to admit through the webhook",
        lambda: admits_through_the_webhook(api, namespace),
        TIMEOUT,
        process=first,
    )
    assert served(port, ca) == x509.load_pem_x509_certificate(data["tls.crt"])
    assert created_lines(first) == 1

    # -- a second replica: the same Secret, no second CA --------------------------------
    version = kube.core(api).read_namespaced_secret(SECRET, NAMESPACE).metadata.resource_version
    second = start_webhook(control_plane, second_port, tmp_path / "second.log")
    clean.append(second)
    wait_until(
        "the second replica to serve",
        lambda: served(second_port, ca) == x509.load_pem_x509_certificate(data["tls.crt"]),
        TIMEOUT,
        process=second,
    )
    assert created_lines(second) == 0
    assert secret_data(api) == data
    assert (
        kube.core(api).read_namespaced_secret(SECRET, NAMESPACE).metadata.resource_version
        == version
    )
    assert ca_bundles(api) == [published] * webhooks()

    # -- rotation: every replica with a certificate of VALIDITY_S seconds ----------------
    for process in (first, second):
        process.stop()
    clean.clear()
    rotating = [
        start_webhook(
            control_plane, p, tmp_path / f"rotating-{p}.log", f"--tls-validity-seconds={VALIDITY_S}"
        )
        for p in (port, second_port)
    ]
    clean.extend(rotating)
    seen: list[bytes] = [data["tls.crt"]]

    def renewed_again() -> bool:
        current = secret_data(api)["tls.crt"]
        if current != seen[-1]:
            seen.append(current)
        # The first change shortens the 90-day certificate; the next is a renewal by time.
        return len(seen) >= 3

    wait_until("two renewals", renewed_again, TIMEOUT + 2 * VALIDITY_S, process=rotating[0])
    latest = x509.load_pem_x509_certificate(seen[-1])
    lifetime = latest.not_valid_after_utc - latest.not_valid_before_utc
    assert lifetime.total_seconds() <= VALIDITY_S + 5
    after = secret_data(api)
    assert after["ca.crt"] == ca  # the same CA signs the renewed certificates
    assert ca_bundles(api) == [published] * webhooks()

    def serving_the_secrets() -> bool:
        current = x509.load_pem_x509_certificate(secret_data(api)["tls.crt"])
        return all(
            served(p, ca).serial_number == current.serial_number for p in (port, second_port)
        )

    wait_until("both replicas to serve the renewed certificate", serving_the_secrets, TIMEOUT)
    assert served(port, ca).serial_number not in {
        x509.load_pem_x509_certificate(c).serial_number for c in seen[:2]
    }
    assert admits_through_the_webhook(api, namespace)
    logs = [process.log.read_text() for process in rotating]
    assert all(created_lines(process) == 0 for process in rotating)
    assert sum(log.count('"webhook.certificate.renewed"') for log in logs) >= 2
