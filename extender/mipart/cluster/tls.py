"""A server's certificate, and the CA its callers' certificates must come from, swapped
without a restart (the webhook's serving certificate; the extender's, with the client CA).

The listening socket is wrapped once with ``ServingTls.context``, which holds no certificate:
its SNI callback, which OpenSSL calls for every ClientHello (with or without a server name),
hands the connection the context of the pair loaded last. Loading a new pair therefore
changes what new connections see, while open ones keep theirs; before the first pair is
loaded every handshake is refused.

With ``require_client_certificate``, every handshake must present a certificate that the
CA loaded with the pair signed (for client authentication): OpenSSL takes the mode from the
listening context and the CA from the one the callback hands over, so both are set.

``FileCertificates`` loads ``--tls-cert``/``--tls-key`` (and ``--client-ca``) again when they
change (a Secret volume that the kubelet updates when cert-manager renews the certificate);
``mipart.webhook.certificates`` feeds the same ``ServingTls`` from a Secret it manages.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from mipart.cluster.pki import PairError, check_pair, describe

log = structlog.get_logger("mipart.cluster.tls")

# How often the certificate files are read. Reading two files of a few KB and comparing them
# with the bytes loaded last costs microseconds, far less than a TLS handshake, and is exact:
# mtimes would need a stat of each file behind the kubelet's ..data symlink and say nothing
# about which of the two files is complete. cert-manager renews days before expiry, so a few
# seconds of delay do not matter.
FILE_CHECK_S = 5.0


def _new_context(*, client_auth: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_auth:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ServingTls:
    """The certificate new TLS connections get; ``load`` replaces it atomically."""

    def __init__(self, *, require_client_certificate: bool = False) -> None:
        self.client_auth = require_client_certificate
        self.context = _new_context(client_auth=self.client_auth)
        self.context.sni_callback = self._select
        self._current: ssl.SSLContext | None = None
        self._loaded: tuple[bytes, bytes, bytes | None] | None = None
        self._lock = threading.Lock()
        self.serial = ""  # of the certificate served now ("" before the first)
        self.last_error = ""  # why the last pair offered was refused ("" if it serves)

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load(
        self, cert_pem: bytes, key_pem: bytes, *, source: str, client_ca: bytes | None = None
    ) -> bool:
        """Serve this pair to new connections (and, with client authentication, accept the
        callers that ``client_ca`` signed). A pair that does not load (unreadable, half
        written, the key of another certificate, a CA that is not one) is refused with a
        logged error, and the one loaded before keeps serving; whether the pair serves now."""
        with self._lock:
            if self._loaded == (cert_pem, key_pem, client_ca):
                return True
            try:
                cert = check_pair(cert_pem, key_pem)
                context = _new_context(client_auth=self.client_auth)
                _load_chain(context, cert_pem, key_pem)
                if self.client_auth:
                    context.load_verify_locations(cadata=_client_ca(client_ca))
            except (PairError, ssl.SSLError, OSError, ValueError) as err:
                self.last_error = str(err)
                log.error(
                    "tls.certificate.refused",
                    source=source,
                    error=str(err),
                    serving=self.serial or None,
                )
                return False
            self._current = context
            self._loaded = (cert_pem, key_pem, client_ca)
            self.last_error = ""
            self.serial = describe(cert)["serial"]
            log.info("tls.certificate.loaded", source=source, **describe(cert))
            return True

    def _select(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> int | None:
        current = self._current
        if current is None:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        connection.context = current
        return None


def _client_ca(pem: bytes | None) -> str:
    text = (pem or b"").decode("ascii", errors="replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError("the client CA is not a PEM certificate")
    return text


def _load_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` reads files only: give it the PEM through memory-backed files (the
    servers' root filesystems are read-only, and a private key should not touch a disk)."""
    with _as_files(cert_pem, key_pem) as (cert_path, key_path):
        context.load_cert_chain(cert_path, key_path)


@contextlib.contextmanager
def _as_files(*contents: bytes) -> Iterator[list[str]]:
    memfd_create: Callable[..., int] | None = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/proc/self/fd").is_dir():
        fds = []
        try:
            for data in contents:
                fd = memfd_create("mipart-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # not Linux: a private directory
        paths = []
        for i, data in enumerate(contents):
            path = Path(directory) / str(i)
            path.touch(mode=0o600)
            path.write_bytes(data)
            paths.append(str(path))
        yield paths


class FileCertificates:
    """``--tls-cert``/``--tls-key`` (and ``--client-ca``), loaded again whenever their content
    changes."""

    def __init__(
        self, cert: Path, key: Path, serving: ServingTls, client_ca: Path | None = None
    ) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.serving = serving
        self._seen: tuple[bytes, bytes, bytes | None] | None = None
        self._unreadable = ""

    def check(self) -> bool:
        """Read both files; load them if they changed since the last look (a pair refused
        once is not tried again until one of them changes). Whether a pair serves."""
        try:
            ca = self.client_ca.read_bytes() if self.client_ca is not None else None
            pair = (self.cert.read_bytes(), self.key.read_bytes(), ca)
        except OSError as err:
            if str(err) != self._unreadable:  # once per distinct problem, not every poll
                self._unreadable = str(err)
                log.error("tls.certificate.unreadable", error=str(err))
            return self.serving.loaded
        self._unreadable = ""
        if pair != self._seen:
            self._seen = pair
            files = ", ".join(str(p) for p in (self.cert, self.key, self.client_ca) if p)
            self.serving.load(pair[0], pair[1], source=files, client_ca=pair[2])
        return self.serving.loaded


class Poll:
    """Runs ``step`` every ``interval_s`` seconds on a thread of its own, or at once when
    woken; an exception in one step is logged and the next runs as planned."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], object]) -> None:
        self._name = name
        self._interval_s = interval_s
        self._step = step
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run the step now (safe from a signal handler: it only sets an Event)."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self._step()
            except Exception:
                log.exception("tls.poll_failed", loop=self._name)
