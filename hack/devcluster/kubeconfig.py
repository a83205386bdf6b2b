"""Kubeconfig files: one per identity, all pointing at the same apiserver."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from hack.devcluster.pki import KeyPair


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    user: str,
    client: KeyPair | None = None,
    token: str | None = None,
) -> Path:
    """Write a kubeconfig that authenticates with a client certificate or a bearer token.

    The certificates are embedded, so that the file keeps working when copied elsewhere.
    """
    credentials: dict[str, str] = {}
    if client is not None:
        credentials["client-certificate-data"] = _b64(client.cert)
        credentials["client-key-data"] = _b64(client.key)
    if token is not None:
        credentials["token"] = token
    if not credentials:
        raise ValueError("a kubeconfig needs a client certificate or a token")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mipart",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "mipart", "context": {"cluster": "mipart", "user": user}}],
        "current-context": "mipart",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
