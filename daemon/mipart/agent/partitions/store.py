"""Crash-safe persistence of what the manager intends: the desired layout, drained GPUs and
the operation in flight. Written atomically (temp file, fsync, rename) before the hardware is
touched, so a restart finds every half-done change and can resume or roll it back."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class PendingOperation:
    id: str
    kind: str  # "compute" or "memory"
    target: str  # a ComputeMode or MemoryMode value
    gpus: tuple[int, ...]
    # The memory mode before a memory change: what a roll-back restores.
    previous_memory: str | None = None


@dataclass(frozen=True, slots=True)
class ManagerState:
    desired: NodeLayout | None = None
    drained: frozenset[int] = frozenset()
    # GPUs drained by the desired-layout reconcile until their change is done. Kept apart from
    # `drained` (an admin's) so lifting them never lifts an admin's drain, and persisted so a
    # restart mid-drain neither forgets them nor lifts them early.
    held: frozenset[int] = frozenset()
    operation: PendingOperation | None = None
    # Free-form reasons per GPU for the last failure, shown until the GPU next changes.
    failures: dict[int, str] = field(default_factory=dict)


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> ManagerState:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ManagerState()
        except json.JSONDecodeError as err:
            raise RuntimeError(f"state file {self.path} is corrupt ({err}); move it away") from err
        if raw.get("version") != FORMAT_VERSION:
            raise RuntimeError(
                f"state file {self.path} has version {raw.get('version')!r}, "
                f"this daemon reads version {FORMAT_VERSION}"
            )
        desired = raw.get("desired")
        op = raw.get("operation")
        return ManagerState(
            desired=None
            if desired is None
            else NodeLayout(
                MemoryMode(desired["memory"]),
                {int(g): ComputeMode(m) for g, m in desired["compute"].items()},
            ),
            drained=frozenset(int(g) for g in raw.get("drained", [])),
            held=frozenset(int(g) for g in raw.get("held", [])),
            operation=None
            if op is None
            else PendingOperation(
                id=op["id"],
                kind=op["kind"],
                target=op["target"],
                gpus=tuple(op["gpus"]),
                previous_memory=op.get("previous_memory"),
            ),
            failures={int(g): r for g, r in raw.get("failures", {}).items()},
        )

    def save(self, state: ManagerState) -> None:
        raw = {
            "version": FORMAT_VERSION,
            "desired": None
            if state.desired is None
            else {
                "memory": state.desired.memory.value,
                "compute": {str(g): m.value for g, m in sorted(state.desired.compute.items())},
            },
            "drained": sorted(state.drained),
            "held": sorted(state.held),
            "operation": None
            if state.operation is None
            else {
                "id": state.operation.id,
                "kind": state.operation.kind,
                "target": state.operation.target,
                "gpus": list(state.operation.gpus),
                "previous_memory": state.operation.previous_memory,
            },
            "failures": {str(g): r for g, r in sorted(state.failures.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(raw, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
