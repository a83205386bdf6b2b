"""Waiting for SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def on_stop(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from the main thread, between two bytecodes: keep it short, such as
    setting an Event) when SIGTERM or SIGINT arrives."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: callback())


def wait_for_stop() -> None:
    """Block until SIGTERM or SIGINT; the caller then shuts down in order."""
    stop = threading.Event()
    on_stop(stop.set)
    stop.wait()
