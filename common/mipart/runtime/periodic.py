"""A step run every few seconds on a thread of its own, until stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Periodic:
    """Runs ``step`` every ``interval_s`` seconds; an exception in one step is logged and the
    next step runs as planned (one bad round must not stop a control loop)."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], object]) -> None:
        self._name = name
        self._interval_s = interval_s
        self._step = step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop after the step that runs now, waiting for it at most ``timeout_s``; whether
        the loop has ended (False: a step is still running, and may still act)."""
        self._stop.set()
        if self._thread.ident is None:  # never started
            return True
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._step()
            except Exception:
                log.exception("periodic.step_failed", loop=self._name)
