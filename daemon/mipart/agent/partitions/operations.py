"""Partition-change operations and the progress events they emit."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class GpuPhase(StrEnum):
    READY = "Ready"
    DRAINING = "Draining"
    SWITCHING = "Switching"
    VERIFYING = "Verifying"
    FAILED = "Failed"


class OperationPhase(StrEnum):
    PLANNED = "Planned"  # a dry run: what would happen
    DRAINING = "Draining"
    SWITCHING = "Switching"
    RELOADING = "Reloading"
    VERIFYING = "Verifying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (OperationPhase.PLANNED, OperationPhase.SUCCEEDED, OperationPhase.FAILED)


@dataclass(frozen=True, slots=True)
class OperationEvent:
    operation_id: str
    phase: OperationPhase
    message: str
    progress: float  # 0.0 - 1.0
    gpus: tuple[int, ...]
    dry_run: bool = False
    # The amdsmi status (BUSY, AMDGPU_RESTART_ERR, ...) when a hardware call failed.
    hardware_status: str | None = None


class Operation:
    """A change in progress. Its events are kept, so a late reader sees them all, and the
    change goes on whether anyone reads them or not (a CLI may disconnect mid-reload)."""

    def __init__(self, kind: str, target: str, gpus: tuple[int, ...], dry_run: bool) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        self.target = target
        self.gpus = gpus
        self.dry_run = dry_run
        self._events: list[OperationEvent] = []
        self._cond = threading.Condition()

    def emit(
        self,
        phase: OperationPhase,
        message: str,
        progress: float,
        hardware_status: str | None = None,
    ) -> OperationEvent:
        event = OperationEvent(
            self.id, phase, message, progress, self.gpus, self.dry_run, hardware_status
        )
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        return event

    @property
    def last(self) -> OperationEvent | None:
        with self._cond:
            return self._events[-1] if self._events else None

    @property
    def done(self) -> bool:
        last = self.last
        return last is not None and last.phase.terminal

    def events(self, poll_s: float = 1.0) -> Iterator[OperationEvent]:
        """Every event from the first, blocking for new ones until the operation ends."""
        seen = 0
        while True:
            with self._cond:
                while seen >= len(self._events):
                    self._cond.wait(poll_s)
                batch = self._events[seen:]
                seen = len(self._events)
            yield from batch
            if batch[-1].phase.terminal:
                return

    def wait(self, timeout: float | None = None) -> OperationEvent | None:
        with self._cond:
            self._cond.wait_for(
                lambda: bool(self._events) and self._events[-1].phase.terminal, timeout
            )
            return self._events[-1] if self._events else None
