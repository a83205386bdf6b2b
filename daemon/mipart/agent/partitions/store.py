"""Crash-safe persistence of what the manager intends: the desired layout, drained GPUs and
the operation in flight. Written atomically (temp file, fsync, rename) before the hardware is
touched, so a restart finds every half-done change and can resume or roll it back."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout

FORMAT_VERSION = 1
_Mode = TypeVar("_Mode", bound=StrEnum)


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


class StateFileError(RuntimeError):
    """The state file cannot be used as it is: corrupt, or of another format version. The
    daemon stops with this message and leaves the file as it found it."""


class _Invalid(ValueError):
    """One part of the file is not what this daemon writes; the message names which."""


# The keys save() writes: anything else is not this daemon's file.
_KEYS = frozenset({"version", "desired", "drained", "held", "operation", "failures"})
_OPERATION_KEYS = frozenset({"id", "kind", "target", "gpus", "previous_memory"})
_TARGETS: dict[str, type[ComputeMode] | type[MemoryMode]] = {
    "compute": ComputeMode,
    "memory": MemoryMode,
}


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> ManagerState:
        """The state save() wrote last; an empty state when there is no file. Anything else
        (not UTF-8, not JSON, a missing or unknown key, a wrong type, a mode this daemon does
        not know) raises StateFileError naming what is wrong, and the file is left alone:
        what it records may be a half-done change that an admin wants to read."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ManagerState()
        try:
            # ValueError covers bad UTF-8, bad JSON and integers too long to parse;
            # RecursionError, nesting too deep for the parser.
            raw = json.loads(data.decode("utf-8"))
            version = raw.get("version") if isinstance(raw, dict) else None
            if type(version) is int and version != FORMAT_VERSION:
                raise StateFileError(
                    f"state file {self.path} has version {version}, this daemon reads version "
                    f"{FORMAT_VERSION}"
                )
            return _parse(raw)
        except (ValueError, RecursionError) as err:
            raise StateFileError(
                f"state file {self.path} is corrupt ({err}); move it away"
            ) from err

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


def _parse(raw: object) -> ManagerState:
    top = _object(raw, "the file", _KEYS, required={"version"})
    if top["version"] != FORMAT_VERSION:
        raise _Invalid(f"version: {top['version']!r} is not {FORMAT_VERSION}")
    desired = top.get("desired")
    operation = top.get("operation")
    failures = _object(top.get("failures", {}), "failures")
    return ManagerState(
        desired=None if desired is None else _layout(desired),
        drained=frozenset(_gpus(top.get("drained", []), "drained")),
        held=frozenset(_gpus(top.get("held", []), "held")),
        operation=None if operation is None else _operation(operation),
        failures={
            _gpu_key(g, "failures"): _string(r, f"failures[{g!r}]") for g, r in failures.items()
        },
    )


def _layout(raw: object) -> NodeLayout:
    desired = _object(
        raw, "desired", frozenset({"memory", "compute"}), required={"memory", "compute"}
    )
    compute = _object(desired["compute"], "desired.compute")
    try:
        return NodeLayout(
            _mode(MemoryMode, desired["memory"], "desired.memory"),
            {
                _gpu_key(g, "desired.compute"): _mode(ComputeMode, m, f"desired.compute[{g!r}]")
                for g, m in compute.items()
            },
        )
    except _Invalid:
        raise
    except ValueError as err:
        raise _Invalid(f"desired: {err}") from err


def _operation(raw: object) -> PendingOperation:
    op = _object(raw, "operation", _OPERATION_KEYS, required=_OPERATION_KEYS - {"previous_memory"})
    kind = _string(op["kind"], "operation.kind")
    if kind not in _TARGETS:
        raise _Invalid(f"operation.kind: {kind!r} is not one of {', '.join(_TARGETS)}")
    previous = op.get("previous_memory")
    return PendingOperation(
        id=_string(op["id"], "operation.id"),
        kind=kind,
        target=_mode(_TARGETS[kind], op["target"], "operation.target").value,
        gpus=tuple(_gpus(op["gpus"], "operation.gpus")),
        previous_memory=None
        if previous is None
        else _mode(MemoryMode, previous, "operation.previous_memory").value,
    )


def _object(
    raw: object,
    where: str,
    keys: frozenset[str] | None = None,
    *,
    required: set[str] | frozenset[str] = frozenset(),
) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise _Invalid(f"{where}: {type(raw).__name__} where an object belongs")
    if keys is not None and (unknown := sorted(set(raw) - keys)):
        raise _Invalid(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})")
    if missing := sorted(required - set(raw)):
        raise _Invalid(f"{where}: {missing[0]!r} is missing")
    return raw


def _string(raw: object, where: str) -> str:
    if not isinstance(raw, str):
        raise _Invalid(f"{where}: {type(raw).__name__} where a string belongs")
    return raw


def _gpu(raw: object, where: str) -> int:
    # bool is an int to Python, never a GPU index to save().
    if type(raw) is not int or raw < 0:
        raise _Invalid(f"{where}: {raw!r} is not a GPU index")
    return raw


def _gpu_key(raw: str, where: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise _Invalid(f"{where}: key {raw!r} is not a GPU index")
    return int(raw)


def _gpus(raw: object, where: str) -> list[int]:
    if not isinstance(raw, list):
        raise _Invalid(f"{where}: {type(raw).__name__} where a list of GPU indexes belongs")
    return [_gpu(g, f"{where}[{i}]") for i, g in enumerate(raw)]


def _mode(kind: type[_Mode], raw: object, where: str) -> _Mode:
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return kind(raw)
    allowed = ", ".join(m.value for m in kind)
    raise _Invalid(f"{where}: {raw!r} is not one of {allowed}")
