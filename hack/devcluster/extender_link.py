"""How mipart's kube-scheduler reaches its extender in the test cluster, and how a test does.

By default as in a cluster where the extender is on a network: HTTPS with client
certificates (the scheduler configuration's ``enableHTTPS`` and ``tlsConfig``). The
extender's serving certificate comes from the cluster CA; kube-scheduler's client
certificate from a CA of its own that signs nothing else, since the cluster CA signs every
component's identity and none of those may pass as the scheduler. The extender's probes,
metrics and debug page are on a second, plain-HTTP loopback port (``--status-listen``).

A benchmark that swaps in the plain-HTTP reference extender runs without TLS.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.devcluster import pki, readiness


@dataclass(frozen=True)
class ExtenderLink:
    port: int  # the verbs
    status_port: int  # /healthz, /readyz, /metrics, /debug/allocations
    tls: bool
    pki_dir: Path  # where the link's certificates are (the cluster's pki directory)
    cluster_ca: Path

    @property
    def serving(self) -> pki.KeyPair:
        return pki.KeyPair(
            self.pki_dir / "mipart-extender.crt", self.pki_dir / "mipart-extender.key"
        )

    @property
    def client_ca(self) -> pki.KeyPair:
        return pki.KeyPair(self._client_dir / "ca.crt", self._client_dir / "ca.key")

    @property
    def scheduler(self) -> pki.KeyPair:
        """kube-scheduler's client certificate, which a test presents to call the verbs."""
        return pki.KeyPair(
            self._client_dir / "kube-scheduler.crt", self._client_dir / "kube-scheduler.key"
        )

    @property
    def _client_dir(self) -> Path:
        return self.pki_dir / "extender-client"

    def create_certificates(self, cluster_ca: pki.KeyPair) -> None:
        if not self.tls:
            return
        pki.issue(
            cluster_ca, self.pki_dir, "mipart-extender", common_name="mipart-extender",
            server_names=("localhost",), server_ips=("127.0.0.1",),
        )  # fmt: skip
        self._client_dir.mkdir(parents=True, exist_ok=True)
        ca = pki.make_ca(self._client_dir, "mipart-extender-client-ca")
        pki.issue(ca, self._client_dir, "kube-scheduler", common_name="mipart-scheduler")

    def configure_scheduler(self, extender: dict[str, Any]) -> None:
        """Point one of the scheduler configuration's extenders at this link."""
        if not self.tls:
            extender["urlPrefix"] = f"http://127.0.0.1:{self.port}"
            return
        extender["urlPrefix"] = f"https://127.0.0.1:{self.port}"
        extender["enableHTTPS"] = True
        extender["tlsConfig"] = {
            "certFile": str(self.scheduler.cert),
            "keyFile": str(self.scheduler.key),
            "caFile": str(self.cluster_ca),
        }

    def extender_flags(self) -> list[str]:
        """mipart-extender's flags for this link."""
        flags = [
            f"--listen=127.0.0.1:{self.port}",
            f"--status-listen=127.0.0.1:{self.status_port}",
        ]
        if self.tls:
            flags += [
                f"--tls-cert={self.serving.cert}",
                f"--tls-key={self.serving.key}",
                f"--client-ca={self.client_ca.cert}",
            ]
        return flags

    def ssl_context(self) -> ssl.SSLContext | None:
        """What kube-scheduler presents: the cluster CA to check the extender, and its client
        certificate."""
        return readiness.client_tls(self.cluster_ca, self.scheduler) if self.tls else None

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        """A connection to the verbs, as kube-scheduler makes it."""
        context = self.ssl_context()
        if context is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def status_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.status_port}{path}"
