"""A start-up lock socket for each pod that holds partitions on this node.

``<root>/<key>/startup.sock`` serves StartupService for one pod alone; the
device plugin mounts that directory, and no other, into the pod's container (CDI). So the
socket a call comes in on says which pod makes it, and the service lets it take only its own
partitions' pools, one call at a time: a tenant cannot queue under another's name, hold pools
it does not use, or use up the daemon's threads (docs/security.md).

A pod's directory lives as long as the pod holds slots. A running container's bind mount
pins the directory itself, so it is never replaced while the pod lives: a daemon that
restarts serves a new socket in the same directory, where the container sees it.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

from mipart.agent.server.startup_lock import StartupLocks
from mipart.agent.server.startup_service import StartupService
from mipart.agent.server.transport import LAUNCHER_SOCKET_DIR_MODE, serve_startup

log = structlog.get_logger(__name__)

SOCKET_NAME = "startup.sock"
# Containers pass through it to their own directory; no one may list the others.
_ROOT_MODE = 0o711


@dataclass
class _Served:
    identity: str
    pools: frozenset[str]
    server: grpc.Server


class StartupSockets:
    def __init__(self, root: Path, locks: StartupLocks | None = None) -> None:
        self.root = root
        self.locks = locks or StartupLocks()
        self._served: dict[str, _Served] = {}
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, _ROOT_MODE)  # a hostPath the kubelet made is 0755

    def open(self, key: str, identity: str, pools: frozenset[str]) -> Path:
        """Serve ``identity``'s lock (on ``pools``) in ``<root>/<key>``; the socket's path."""
        directory = self.root / key
        with self._lock:
            served = self._served.get(key)
            if served is not None and (served.identity, served.pools) == (identity, pools):
                return directory / SOCKET_NAME
            if served is not None:  # the same name, another pod or other partitions
                served.server.stop(grace=0)
            directory.mkdir(exist_ok=True)
            os.chmod(directory, LAUNCHER_SOCKET_DIR_MODE)
            service = StartupService(self.locks, identity, pools)
            server = serve_startup(service, directory / SOCKET_NAME)
            self._served[key] = _Served(identity, pools, server)
        log.info("startup_lock.socket", pod=identity, pools=sorted(pools), directory=str(directory))
        return directory / SOCKET_NAME

    def retain(self, keys: set[str]) -> None:
        """Stop serving, and remove the directories of, every pod not in ``keys`` (those no
        longer holding slots), including directories a previous daemon left."""
        with self._lock:
            for key in [k for k in self._served if k not in keys]:
                self._served.pop(key).server.stop(grace=0)
            stale = [d for d in self.root.iterdir() if d.is_dir() and d.name not in keys]
        for directory in stale:
            shutil.rmtree(directory, ignore_errors=True)
            log.info("startup_lock.socket_removed", directory=str(directory))

    def close(self) -> None:
        """Stop every server; the directories stay for the next daemon."""
        with self._lock:
            for served in self._served.values():
                served.server.stop(grace=0)
            self._served.clear()
