"""Probes for "is it up yet": HTTP health endpoints and API state. Each returns a bool or
raises (which procs.wait_until treats as "not yet")."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path
from typing import Any

from hack.devcluster import kube, pki


def client_tls(ca_cert: Path, client: pki.KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


def unverified_tls() -> ssl.SSLContext:
    """For kube-scheduler and kube-controller-manager, whose /healthz is served with a
    certificate they sign themselves at start-up."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return bool(response.status == 200)


def nodes_ready(api: Any, names: list[str]) -> bool:
    ready = set()
    for node in kube.core(api).list_node().items:
        for condition in node.status.conditions or []:
            if condition.type == "Ready" and condition.status == "True":
                ready.add(node.metadata.name)
    return ready >= set(names)


def service_account_exists(api: Any, namespace: str, name: str) -> bool:
    return kube.core(api).read_namespaced_service_account(name, namespace) is not None


def lease_held(api: Any, namespace: str, name: str) -> bool:
    lease = kube.coordination(api).read_namespaced_lease(name, namespace)
    return bool(lease.spec.holder_identity)
