"""The webhook's certificates: the maths of the builtin mode (mipart.cluster.pki), the pair
that serves new TLS connections and its reload from files (mipart.cluster.tls), the Secret
and caBundle rounds against an in-memory API (mipart.webhook.certificates), and the flags."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mipart.cluster import pki
from mipart.cluster.http import JsonServer, Limits
from mipart.cluster.tls import FileCertificates, Poll, ServingTls
from mipart.kube.api import KubeError
from mipart.runtime import logs
from mipart.webhook import main as webhook_main
from mipart.webhook.certificates import RENEW_ANNOTATION, BuiltinCertificates

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DNS = "mipart-webhook.mipart-system.svc"
POLICY = pki.Policy(dns_names=pki.service_names(DNS), validity=dt.timedelta(days=90))


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def bundle(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


# -- the maths -----------------------------------------------------------------------------


def test_service_names_are_the_dns_name_and_its_short_forms() -> None:
    assert pki.service_names(DNS) == (DNS, "mipart-webhook.mipart-system", "mipart-webhook")
    assert pki.service_names("mipart-webhook.ns.svc.cluster.local") == (
        "mipart-webhook.ns.svc.cluster.local",
        "mipart-webhook.ns.svc",
        "mipart-webhook.ns",
        "mipart-webhook",
    )
    assert pki.service_names("localhost") == ("localhost",)


def test_issue_makes_a_ca_that_signs_a_serving_certificate_for_the_service() -> None:
    material = pki.issue(POLICY, NOW)
    ca, cert = load(material.ca_crt), load(material.tls_crt)

    # The CA: self-signed, P-256, 10 years, may sign leaf certificates only.
    ca.verify_directly_issued_by(ca)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc == NOW + dt.timedelta(days=3650)

    # The serving certificate: signed by the CA, the three names, the validity asked for.
    cert.verify_directly_issued_by(ca)
    assert pki.signed_by(cert, ca)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        DNS,
        "mipart-webhook.mipart-system",
        "mipart-webhook",
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=90)
    # Backdated a little for clocks behind the webhook's, never more than 5 minutes.
    assert NOW - dt.timedelta(minutes=5) == cert.not_valid_before_utc
    assert pki.check_pair(material.tls_crt, material.tls_key) == cert
    assert pki.next_step(material, POLICY, NOW) is None


def test_a_serving_certificate_never_outlives_its_ca_and_takes_ip_addresses() -> None:
    ca, ca_key = pki.make_ca(NOW, dt.timedelta(days=30))
    policy = pki.Policy(dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    cert, _ = pki.make_serving(ca, ca_key, policy, NOW)
    assert cert.not_valid_after_utc == ca.not_valid_after_utc
    assert pki.names(cert) == ({"localhost"}, {"127.0.0.1"})


def test_a_tiny_validity_is_backdated_by_a_tenth_so_it_is_not_renewed_at_once() -> None:
    policy = pki.Policy(dns_names=("localhost",), validity=dt.timedelta(seconds=20))
    material = pki.issue(policy, NOW)
    cert = load(material.tls_crt)
    assert cert.not_valid_before_utc == NOW - dt.timedelta(seconds=2)
    assert pki.next_step(material, policy, NOW) is None
    assert pki.next_step(material, policy, NOW + dt.timedelta(seconds=12)) is None
    step = pki.next_step(material, policy, NOW + dt.timedelta(seconds=13))
    assert step is not None
    assert step.kind == "renewed"


def test_renewal_is_due_when_a_third_of_the_lifetime_is_left() -> None:
    ca, ca_key = pki.make_ca(NOW)
    cert, _ = pki.make_serving(ca, ca_key, POLICY, NOW)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    boundary = cert.not_valid_after_utc - lifetime / 3
    assert not pki.renew_due(cert, boundary - dt.timedelta(seconds=1))
    assert pki.renew_due(cert, boundary)
    assert pki.renew_due(cert, cert.not_valid_after_utc + dt.timedelta(days=1))


def test_a_renewal_keeps_the_ca_and_makes_a_new_key() -> None:
    material = pki.issue(POLICY, NOW)
    later = NOW + dt.timedelta(days=61)
    step = pki.next_step(material, POLICY, later)
    assert step is not None
    assert step.kind == "renewed"
    new = step.material
    assert new.ca_crt == material.ca_crt
    assert new.ca_key == material.ca_key
    assert new.tls_key != material.tls_key
    cert = pki.check_pair(new.tls_crt, new.tls_key)
    assert pki.signed_by(cert, load(material.ca_crt))
    assert cert.serial_number != load(material.tls_crt).serial_number
    assert cert.not_valid_after_utc == later + dt.timedelta(days=90)
    assert pki.next_step(new, POLICY, later) is None


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda m, other: pki.Material(**{**vars(m), "tls_key": other.tls_key}), "key does not"),
        (lambda m, other: pki.Material(**{**vars(m), "tls_crt": m.tls_crt[:100]}), "not readable"),
        (lambda m, other: pki.Material(**{**vars(m), "tls_crt": b""}), "not readable"),
        (
            lambda m, other: pki.Material(
                **{**vars(m), "tls_crt": other.tls_crt, "tls_key": other.tls_key}
            ),
            "not signed by the current CA",
        ),
    ],
)
def test_a_broken_serving_pair_is_renewed_from_the_same_ca(spoil: Any, why: str) -> None:
    material = pki.issue(POLICY, NOW)
    spoilt = spoil(material, pki.issue(POLICY, NOW))
    step = pki.next_step(spoilt, POLICY, NOW)
    assert step is not None
    assert step.kind == "renewed"
    assert why in step.reason
    assert step.material.ca_key == material.ca_key
    assert pki.signed_by(
        pki.check_pair(step.material.tls_crt, step.material.tls_key), load(material.ca_crt)
    )


def test_other_names_are_a_reason_to_renew() -> None:
    material = pki.issue(POLICY, NOW)
    other = pki.Policy(dns_names=pki.service_names("mipart-webhook.other.svc"))
    step = pki.next_step(material, other, NOW)
    assert step is not None
    assert step.kind == "renewed"
    assert pki.names(load(step.material.tls_crt))[0] == set(other.dns_names)


def test_a_shortened_validity_applies_at_once_a_longer_one_at_the_next_renewal() -> None:
    material = pki.issue(POLICY, NOW)
    shorter = pki.Policy(dns_names=POLICY.dns_names, validity=dt.timedelta(seconds=30))
    step = pki.next_step(material, shorter, NOW)
    assert step is not None
    assert "outlives" in step.reason
    assert pki.next_step(step.material, shorter, NOW) is None
    assert pki.next_step(step.material, POLICY, NOW) is None


def test_no_usable_ca_means_everything_new() -> None:
    material = pki.issue(POLICY, NOW)
    for spoilt in (
        pki.Material(),
        pki.Material(**{**vars(material), "ca_key": b""}),
        pki.Material(**{**vars(material), "ca_key": pki.issue(POLICY, NOW).ca_key}),
    ):
        step = pki.next_step(spoilt, POLICY, NOW)
        assert step is not None
        assert step.kind == "reissued"
        assert step.material.ca_crt != material.ca_crt
    expired = pki.next_step(material, POLICY, NOW + dt.timedelta(days=3651))
    assert expired is not None
    assert expired.kind == "reissued"


def test_ca_rotation_publishes_both_then_switches_after_one_serving_lifetime() -> None:
    material = pki.issue(POLICY, NOW)
    old_ca = load(material.ca_crt)
    near = old_ca.not_valid_after_utc - dt.timedelta(days=364)
    # A year and a day left: no CA rotation yet (the serving certificate was long due).
    fresh = pki.next_step(material, POLICY, near - dt.timedelta(days=1))
    assert fresh is not None
    assert fresh.kind == "renewed"
    material = fresh.material
    assert pki.next_step(material, POLICY, near - dt.timedelta(days=1)) is None

    published = pki.next_step(material, POLICY, near)
    assert published is not None
    assert published.kind == "ca-published"
    p = published.material
    cas = bundle(p.ca_crt)
    assert cas[0] == old_ca
    assert len(cas) == 2
    new_ca = cas[1]
    assert p.tls_crt == material.tls_crt  # still served as it was
    assert p.ca_key == material.ca_key
    assert p.ca_next_key
    assert pki.next_step(p, POLICY, near + dt.timedelta(days=30)) is None

    switched = pki.next_step(p, POLICY, near + dt.timedelta(days=90))
    assert switched is not None
    assert switched.kind == "ca-switched"
    s = switched.material
    assert bundle(s.ca_crt) == [new_ca, old_ca]  # the old one is still trusted
    assert not s.ca_next_key
    assert pki.signed_by(pki.check_pair(s.tls_crt, s.tls_key), new_ca)

    # The next renewal drops the old CA.
    renewed = pki.next_step(s, POLICY, near + dt.timedelta(days=150))
    assert renewed is not None
    assert renewed.kind == "renewed"
    assert bundle(renewed.material.ca_crt) == [new_ca]


def test_forced_renewals() -> None:
    material = pki.issue(POLICY, NOW)
    step = pki.next_step(material, POLICY, NOW, force="certificate")
    assert step is not None
    assert step.kind == "renewed"
    assert step.material.ca_crt == material.ca_crt
    published = pki.next_step(material, POLICY, NOW, force="ca")
    assert published is not None
    assert published.kind == "ca-published"
    switched = pki.next_step(published.material, POLICY, NOW, force="ca")
    assert switched is not None
    assert switched.kind == "ca-switched"


# -- the serving pair, reloaded --------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[ServingTls, JsonServer]]:
    serving = ServingTls()
    server = JsonServer("127.0.0.1", 0, tls=serving.context)
    server.get_routes["/healthz"] = lambda: (200, "text/plain", b"ok")
    server.start()
    yield serving, server
    server.stop()


def presented(port: int, ca_pem: bytes | None = None) -> x509.Certificate:
    """The certificate a new TLS connection to the port gets (verified against ca_pem)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="mipart-webhook") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


def write_pair(directory: Path, material: pki.Material) -> None:
    (directory / "tls.crt").write_bytes(material.tls_crt)
    (directory / "tls.key").write_bytes(material.tls_key)


def test_no_handshake_before_a_certificate_is_loaded(
    served: tuple[ServingTls, JsonServer],
) -> None:
    serving, server = served
    assert not serving.loaded
    with pytest.raises(ssl.SSLError):
        presented(server.port)


def test_a_caller_that_never_shakes_hands_is_dropped_and_blocks_no_one(tmp_path: Path) -> None:
    serving = ServingTls()
    material = pki.issue(POLICY, dt.datetime.now(dt.UTC))
    assert serving.load(material.tls_crt, material.tls_key, source="test")
    server = JsonServer("127.0.0.1", 0, tls=serving.context, limits=Limits(handshake_timeout_s=0.5))
    server.get_routes["/healthz"] = lambda: (200, "text/plain", b"ok")
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as silent:
            # Served meanwhile, on a connection of its own.
            assert presented(server.port, material.ca_crt) == load(material.tls_crt)
            silent.settimeout(5)
            assert silent.recv(100) == b""  # closed by the server, no byte sent
    finally:
        server.stop()


def test_changed_files_serve_the_new_certificate_to_new_connections(
    served: tuple[ServingTls, JsonServer], tmp_path: Path
) -> None:
    serving, server = served
    first = pki.issue(POLICY, dt.datetime.now(dt.UTC))
    write_pair(tmp_path, first)
    files = FileCertificates(tmp_path / "tls.crt", tmp_path / "tls.key", serving)
    assert files.check()
    assert presented(server.port, first.ca_crt) == load(first.tls_crt)

    # An open connection keeps what it got; a new one gets the renewed pair.
    renewed = pki.next_step(first, POLICY, dt.datetime.now(dt.UTC), force="certificate")
    assert renewed is not None
    write_pair(tmp_path, renewed.material)
    assert presented(server.port, first.ca_crt) == load(first.tls_crt)  # not looked yet
    assert files.check()
    assert presented(server.port, first.ca_crt) == load(renewed.material.tls_crt)
    assert serving.serial == pki.serial_hex(load(renewed.material.tls_crt))


def test_a_mismatched_or_half_written_pair_is_refused_and_the_old_one_keeps_serving(
    served: tuple[ServingTls, JsonServer], tmp_path: Path
) -> None:
    serving, server = served
    first = pki.issue(POLICY, dt.datetime.now(dt.UTC))
    write_pair(tmp_path, first)
    files = FileCertificates(tmp_path / "tls.crt", tmp_path / "tls.key", serving)
    assert files.check()
    other = pki.issue(POLICY, dt.datetime.now(dt.UTC))

    # The certificate renewed, the key not yet: the kubelet's swap half seen.
    (tmp_path / "tls.crt").write_bytes(other.tls_crt)
    assert files.check()  # still serving: the old pair
    assert "does not belong to the certificate" in serving.last_error
    assert presented(server.port, first.ca_crt) == load(first.tls_crt)

    # Half-written.
    (tmp_path / "tls.key").write_bytes(other.tls_key[:40])
    files.check()
    assert "not readable" in serving.last_error
    assert presented(server.port, first.ca_crt) == load(first.tls_crt)

    # Complete: loaded.
    (tmp_path / "tls.key").write_bytes(other.tls_key)
    files.check()
    assert serving.last_error == ""
    assert presented(server.port, other.ca_crt) == load(other.tls_crt)


def test_missing_files_at_start_are_not_a_certificate(tmp_path: Path) -> None:
    files = FileCertificates(tmp_path / "tls.crt", tmp_path / "tls.key", ServingTls())
    assert not files.check()


def test_poll_runs_its_step_when_woken() -> None:
    ran = threading.Event()
    poll = Poll("t", 3600, ran.set)
    poll.start()
    poll.wake()
    assert ran.wait(5)
    poll.stop()


# -- the Secret and the caBundle, against an in-memory API -----------------------------------

SECRET = "/api/v1/namespaces/mipart-system/secrets/mipart-webhook-tls"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
CONFIG_PATHS = [
    f"{ADMISSION}/mutatingwebhookconfigurations/mipart",
    f"{ADMISSION}/validatingwebhookconfigurations/mipart",
]


class FakeApi:
    """The few paths the builtin mode uses, with resourceVersions and JSON patches as the API
    server applies them. ``before_write`` runs before a write is applied (a race)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes: list[tuple[str, str]] = []
        self.before_write: Any = None

    def add(self, path: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[path] = obj

    def get(self, path: str) -> Any:
        if path not in self.objects:
            raise KubeError(404, "Not Found", '{"message": "not found"}')
        return copy.deepcopy(self.objects[path])

    def _race(self) -> None:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()

    def post(self, path: str, body: Any) -> Any:
        self._race()
        full = f"{path}/{body['metadata']['name']}"
        self.writes.append(("POST", full))
        if full in self.objects:
            raise KubeError(409, "Conflict", '{"reason": "AlreadyExists"}')
        self.add(full, body)
        return self.get(full)

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        assert method == "PUT"
        self._race()
        self.writes.append(("PUT", path))
        current = self.get(path)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", '{"message": "the object has been modified"}')
        self.add(path, body)
        return self.get(path)

    def json_patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        self.writes.append(("PATCH", path))
        try:
            patched = jsonpatch.apply_patch(self.get(path), operations)
        except jsonpatch.JsonPatchTestFailed as err:
            raise KubeError(422, "Unprocessable Entity", '{"message": "test failed"}') from err
        self.add(path, patched)
        return patched

    def secret_data(self) -> dict[str, bytes]:
        data = self.objects[SECRET]["data"]
        return {k: base64.b64decode(v) for k, v in data.items()}


def configurations(api: FakeApi, *, ca_bundle: str | None = None) -> None:
    for path, hooks in zip(
        CONFIG_PATHS, (["pods.mutate.mipart.io"], ["pods.validate.mipart.io"]), strict=True
    ):
        config: dict[str, Any] = {"url": "https://127.0.0.1:1/x"}
        if ca_bundle is not None:
            config["caBundle"] = ca_bundle
        api.add(
            path,
            {
                "metadata": {"name": "mipart"},
                "webhooks": [{"name": h, "clientConfig": dict(config)} for h in hooks],
            },
        )


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def replica(api: FakeApi, clock: Clock, policy: pki.Policy = POLICY) -> BuiltinCertificates:
    return BuiltinCertificates(
        api,  # type: ignore[arg-type]
        "mipart-system",
        "mipart-webhook-tls",
        policy,
        ServingTls(),
        ca_bundle_webhooks="mipart",
        clock=clock,
    )


def bundles(api: FakeApi) -> list[str]:
    return [
        h["clientConfig"].get("caBundle", "")
        for p in CONFIG_PATHS
        for h in api.objects[p]["webhooks"]
    ]


def test_the_first_round_creates_the_secret_and_publishes_its_ca() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    certs = replica(api, clock)
    assert certs.check()
    secret = api.objects[SECRET]
    assert secret["type"] == "kubernetes.io/tls"
    data = api.secret_data()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert certs.serving.serial == pki.serial_hex(load(data["tls.crt"]))
    assert bundles(api) == [base64.b64encode(data["ca.crt"]).decode()] * 2

    # Nothing differs: no write at all.
    api.writes.clear()
    assert certs.check()
    assert api.writes == []


def test_a_second_replica_uses_the_first_ones_ca() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    first, second = replica(api, clock), replica(api, clock)
    assert first.check()
    data = api.secret_data()
    api.writes.clear()
    assert second.check()
    assert api.writes == []
    assert api.secret_data() == data
    assert second.serving.serial == first.serving.serial


def test_replicas_that_create_at_once_use_the_winners_secret() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    winner, loser = replica(api, clock), replica(api, clock)
    # The winner's create lands between the loser's GET (404) and its POST.
    api.before_write = winner.check
    assert loser.check()
    assert ("POST", SECRET) in api.writes
    assert loser.serving.serial == winner.serving.serial
    assert bundles(api) == [base64.b64encode(api.secret_data()["ca.crt"]).decode()] * 2


def test_a_renewal_updates_the_secret_once_and_every_replica_loads_it() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    a, b = replica(api, clock), replica(api, clock)
    assert a.check()
    assert b.check()
    before = api.secret_data()
    clock.now = NOW + dt.timedelta(days=61)
    # b decides too, but a's update lands between b's GET and PUT: b's is refused (409),
    # b reads again and finds nothing left to do.
    api.before_write = a.check
    api.writes.clear()
    assert b.check()
    puts = [w for w in api.writes if w[0] == "PUT"]
    assert len(puts) == 2  # a's, then b's refused one
    after = api.secret_data()
    assert after["ca.crt"] == before["ca.crt"]
    assert after["tls.crt"] != before["tls.crt"]
    assert a.serving.serial == b.serving.serial == pki.serial_hex(load(after["tls.crt"]))
    assert not any(w[0] == "PATCH" for w in api.writes)  # the CA did not change


def test_the_renew_annotation_forces_a_renewal_and_is_removed() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    certs = replica(api, clock)
    certs.check()
    before = api.secret_data()
    secret = api.get(SECRET)
    secret["metadata"]["annotations"] = {RENEW_ANNOTATION: "now", "keep": "me"}
    api.add(SECRET, secret)
    certs.check()
    assert api.secret_data()["tls.crt"] != before["tls.crt"]
    assert api.objects[SECRET]["metadata"]["annotations"] == {"keep": "me"}


def test_an_asked_for_ca_rotation_publishes_both_cas_then_switches() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    certs = replica(api, clock)
    certs.check()
    old_ca = bundle(api.secret_data()["ca.crt"])

    def ask() -> None:
        secret = api.get(SECRET)
        secret["metadata"]["annotations"] = {RENEW_ANNOTATION: "ca"}
        api.add(SECRET, secret)
        certs.check()

    ask()
    published = api.secret_data()
    both = bundle(published["ca.crt"])
    assert both[0] == old_ca[0]
    assert len(both) == 2
    assert bundles(api) == [base64.b64encode(published["ca.crt"]).decode()] * 2
    assert "ca-next.key" in published
    ask()
    switched = api.secret_data()
    assert bundle(switched["ca.crt"]) == [both[1], both[0]]
    assert "ca-next.key" not in switched
    assert pki.signed_by(load(switched["tls.crt"]), both[1])
    assert certs.serving.serial == pki.serial_hex(load(switched["tls.crt"]))
    assert bundles(api) == [base64.b64encode(switched["ca.crt"]).decode()] * 2


def test_a_deleted_secret_gets_a_new_ca_published() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)
    certs = replica(api, clock)
    certs.check()
    old = api.secret_data()["ca.crt"]
    del api.objects[SECRET]
    certs.check()
    new = api.secret_data()["ca.crt"]
    assert new != old
    assert bundles(api) == [base64.b64encode(new).decode()] * 2


def test_only_differing_webhooks_are_patched_and_a_changed_list_is_left_for_the_next_round() -> (
    None
):
    api, clock = FakeApi(), Clock()
    certs = replica(api, clock)
    material = pki.issue(POLICY, NOW)
    want = base64.b64encode(material.ca_crt).decode()
    configurations(api, ca_bundle=want)
    mutating = api.get(CONFIG_PATHS[0])
    mutating["webhooks"].append({"name": "second", "clientConfig": {"url": "https://x"}})
    api.add(CONFIG_PATHS[0], mutating)
    api.writes.clear()
    certs.publish(material.ca_crt)
    assert api.writes == [("PATCH", CONFIG_PATHS[0])]
    assert bundles(api) == [want, want, want]

    # The list changes between the GET and the PATCH: the test op fails, nothing is written.
    configurations(api)
    real_get = api.get

    def get_then_reorder(path: str) -> Any:
        got = real_get(path)
        if path == CONFIG_PATHS[0]:
            moved = real_get(path)
            moved["webhooks"][0]["name"] = "renamed"
            api.add(path, moved)
        return got

    api.get = get_then_reorder  # type: ignore[method-assign]
    certs.publish(material.ca_crt)
    api.get = real_get  # type: ignore[method-assign]
    assert api.objects[CONFIG_PATHS[0]]["webhooks"][0]["clientConfig"].get("caBundle") is None
    assert api.objects[CONFIG_PATHS[1]]["webhooks"][0]["clientConfig"]["caBundle"] == want


def test_absent_configurations_are_skipped() -> None:
    api, clock = FakeApi(), Clock()
    certs = replica(api, clock)
    assert certs.check()  # nothing to patch yet; the certificate serves anyway
    assert SECRET in api.objects


def test_start_retries_until_the_api_answers() -> None:
    api, clock = FakeApi(), Clock()
    failures = iter([ConnectionError("refused"), KubeError(403, "Forbidden", "{}")])
    real_get = api.get

    def flaky(path: str) -> Any:
        err = next(failures, None)
        if err is not None:
            raise err
        return real_get(path)

    api.get = flaky  # type: ignore[method-assign]
    certs = replica(api, clock)
    assert certs.start(threading.Event(), retry_s=0.01)
    stop = threading.Event()
    stop.set()
    assert not replica(FakeApi(), clock).start(stop)


# -- the flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --tls-cert and --tls-key, or --tls-secret"),
        (["--tls-cert=a", "--tls-key=b", "--tls-secret=ns/s"], "mutually exclusive"),
        (["--tls-cert=a"], "--tls-cert and --tls-key go together"),
        (
            ["--tls-cert=a", "--tls-key=b", "--tls-dns-name=x"],
            "--tls-dns-name: only with --tls-secret",
        ),
        (["--tls-secret=s", "--tls-dns-name=x"], "is not NAMESPACE/NAME"),
        (["--tls-secret=ns/s"], "needs --tls-dns-name"),
        (["--tls-secret=ns/s", "--tls-dns-name=x", "--tls-validity-days=0"], "not within 1 to 365"),
    ],
)
def test_the_certificate_flags_are_one_way_or_the_other(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        webhook_main.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_builtin_flags_make_the_policy() -> None:
    parser = webhook_main.build_parser()
    args = parser.parse_args(
        [
            "--tls-secret=ns/s",
            f"--tls-dns-name={DNS}",
            "--tls-validity-days=30",
            "--tls-ip-address=127.0.0.1",
        ]
    )
    policy = webhook_main.policy_from(args)
    assert policy.dns_names == pki.service_names(DNS)
    assert policy.validity == dt.timedelta(days=30)
    assert policy.ip_addresses == ("127.0.0.1",)
    args = parser.parse_args(["--tls-secret=ns/s", "--tls-dns-name=x", "--tls-validity-seconds=20"])
    assert webhook_main.policy_from(args).validity == dt.timedelta(seconds=20)
    assert "--tls-validity-seconds" not in parser.format_help()


def test_unloadable_files_stop_the_webhook_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure_from", lambda args: None)
    code = webhook_main.main(
        ["--listen=127.0.0.1:0", f"--tls-cert={tmp_path}/no.crt", f"--tls-key={tmp_path}/no.key"]
    )
    assert code == 2


def test_a_caBundle_that_cannot_be_patched_does_not_keep_the_certificate_from_serving() -> None:
    api, clock = FakeApi(), Clock()
    configurations(api)

    def forbidden(path: str, operations: list[dict[str, Any]]) -> Any:
        raise KubeError(403, "Forbidden", '{"message": "cannot patch"}')

    api.json_patch = forbidden  # type: ignore[method-assign]
    certs = replica(api, clock)
    assert certs.start(threading.Event(), retry_s=0.01)
    assert certs.serving.loaded
