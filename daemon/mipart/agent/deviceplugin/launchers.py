"""The start-up lock sockets the device plugin hands containers, one per pod.

The plugin asks for a pod's socket when the pod's container starts and mounts its directory
into that container alone (cdi.spec); it says which pods still hold slots, and the others'
sockets go. mipart.agent.server.startup_sockets serves them; the daemon's main wires the two.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol


class LauncherSockets(Protocol):
    def open(self, key: str, identity: str, pools: frozenset[str]) -> Path:
        """Serve the start-up lock for ``identity`` (namespace/pod) on its own ``pools``; the
        socket's path, alone in a directory of its own."""
        ...

    def retain(self, keys: set[str]) -> None:
        """Keep only these pods' sockets."""
        ...


def key_of(namespace: str, pod: str) -> str:
    """The pod's directory name: a digest of namespace/name. The names themselves (up to 63
    and 253 characters) would overflow a unix socket's 108-byte path."""
    return hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:20]
