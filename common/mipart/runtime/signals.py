"""Waiting for SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal
import threading


def wait_for_stop() -> None:
    """Block until SIGTERM or SIGINT; the caller then shuts down in order."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
