"""The daemon's per-pod start-up lock sockets in a process of their own, for tests that kill
it as a daemon crash would: ``python -m tests.support.lock_daemon ROOT POD=POOL[,POOL] ...``
serves each pod's socket (StartupSockets, the daemon's own code) until killed."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from mipart.agent.server.startup_sockets import StartupSockets


def main(argv: list[str]) -> None:
    root, *pods = argv
    sockets = StartupSockets(Path(root))
    for spec in pods:
        pod, _, pools = spec.partition("=")
        sockets.open(f"tenants_{pod}", f"tenants/{pod}", frozenset(pools.split(",")))
    print("serving", flush=True)
    signal.pause()


if __name__ == "__main__":
    main(sys.argv[1:])
