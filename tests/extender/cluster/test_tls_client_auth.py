"""Client authentication on the shared server: only callers whose certificate the loaded
client CA signed get through the handshake (the extender's --client-ca), and a new CA in
the files applies to new connections without a restart."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mipart.cluster import pki
from mipart.cluster.http import JsonServer
from mipart.cluster.tls import FileCertificates, ServingTls

NOW = dt.datetime.now(dt.UTC)
SERVER = pki.issue(
    pki.Policy(
        dns_names=("localhost",), ip_addresses=("127.0.0.1",), validity=dt.timedelta(days=1)
    ),
    NOW,
)


def client_identity(directory: Path, name: str) -> tuple[bytes, Path, Path]:
    """A CA of its own, and a client certificate it signs for ``name``: (CA PEM, cert, key)."""
    ca_cert, ca_key = pki.make_ca(NOW, dt.timedelta(days=1))
    key = pki.new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(pki.cert_pem(cert))
    key_path.write_bytes(pki.key_pem(key))
    return pki.cert_pem(ca_cert), cert_path, key_path


@pytest.fixture
def server() -> Iterator[tuple[ServingTls, JsonServer]]:
    serving = ServingTls(require_client_certificate=True)
    server = JsonServer("127.0.0.1", 0, tls=serving.context)
    server.post_routes["/bind"] = lambda body: {"Error": ""}
    server.start()
    yield serving, server
    server.stop()


def call(port: int, identity: tuple[Path, Path] | None) -> bytes:
    """POST /bind over TLS, with the client certificate if any; the reply's first bytes."""
    context = ssl.create_default_context(cadata=SERVER.ca_crt.decode())
    if identity is not None:
        context.load_cert_chain(*identity)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(b"POST /bind HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        return conn.recv(100)


def refused(port: int, identity: tuple[Path, Path] | None) -> bool:
    """Whether the server turned the caller away without an HTTP reply. In TLS 1.3 the client
    finishes its side of the handshake first and hears of the refusal when it reads: an
    alert, or the connection closed."""
    try:
        return call(port, identity) == b""
    except (ssl.SSLError, ConnectionError):
        return True


def test_only_callers_the_client_ca_signed_are_served(
    server: tuple[ServingTls, JsonServer], tmp_path: Path
) -> None:
    serving, http = server
    scheduler_ca, scheduler_cert, scheduler_key = client_identity(tmp_path, "kube-scheduler")
    _, stranger_cert, stranger_key = client_identity(tmp_path, "stranger")
    assert serving.load(SERVER.tls_crt, SERVER.tls_key, source="test", client_ca=scheduler_ca)

    assert call(http.port, (scheduler_cert, scheduler_key)).startswith(b"HTTP/1.1 200")
    assert refused(http.port, None)
    assert refused(http.port, (stranger_cert, stranger_key))


def test_a_new_client_ca_in_the_files_applies_to_new_connections(
    server: tuple[ServingTls, JsonServer], tmp_path: Path
) -> None:
    serving, http = server
    (tmp_path / "tls.crt").write_bytes(SERVER.tls_crt)
    (tmp_path / "tls.key").write_bytes(SERVER.tls_key)
    old_ca, old_cert, old_key = client_identity(tmp_path, "old")
    new_ca, new_cert, new_key = client_identity(tmp_path, "new")
    (tmp_path / "client-ca.crt").write_bytes(old_ca)
    files = FileCertificates(
        tmp_path / "tls.crt", tmp_path / "tls.key", serving, tmp_path / "client-ca.crt"
    )
    assert files.check()
    assert call(http.port, (old_cert, old_key)).startswith(b"HTTP/1.1 200")

    (tmp_path / "client-ca.crt").write_bytes(new_ca)
    assert files.check()
    assert call(http.port, (new_cert, new_key)).startswith(b"HTTP/1.1 200")
    assert refused(http.port, (old_cert, old_key))


@pytest.mark.parametrize("client_ca", [None, b"", b"not a certificate"])
def test_client_authentication_without_a_usable_ca_is_refused(client_ca: bytes | None) -> None:
    serving = ServingTls(require_client_certificate=True)
    assert not serving.load(SERVER.tls_crt, SERVER.tls_key, source="test", client_ca=client_ca)
    assert "client CA" in serving.last_error
    assert not serving.loaded
