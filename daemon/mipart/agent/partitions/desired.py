"""Drive the node towards a desired layout that someone else writes (GPUNode.spec).

The reconcile goes one step at a time (domain ``plan``): a GPU whose step is next and that
holds allocations or processes is drained (held) until it is empty, then changed through the
manager like a CLI change, then released. A memory step holds every GPU. Progress is kept as
a small report (conditions) that the Kubernetes side publishes; it knows nothing of
Kubernetes itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from mipart.agent.partitions.errors import Conflict
from mipart.agent.partitions.manager import PartitionManager, layout_of
from mipart.agent.partitions.operations import OperationPhase
from mipart.geometry import (
    ComputeMode,
    ComputeStep,
    InvalidLayout,
    MemoryMode,
    MemoryStep,
    NodeLayout,
    Step,
    layout_steps,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DesiredSpec:
    """What the spec asks for; a GPU absent from ``compute`` keeps its mode."""

    generation: int
    memory: MemoryMode | None = None
    compute: dict[int, ComputeMode] = field(default_factory=dict)
    drained: dict[int, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    ok: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    generation: int  # the spec generation acted on
    conditions: tuple[Condition, ...]


_WARNINGS = ("Failed", "InvalidLayout")
# (reason, message, warning): called once per change of a condition's reason.
Notifier = Callable[[str, str, bool], None]


class DesiredLayoutReconciler:
    def __init__(self, manager: PartitionManager, *, poll_s: float = 1.0) -> None:
        self._manager = manager
        self._poll_s = poll_s
        self._spec: DesiredSpec | None = None
        self._report: Report | None = None
        # A failed step is not retried for the same generation: a new spec (or a restart)
        # retries, a loop of failing driver calls would not help.
        self._failed_generation: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._notifiers: list[Notifier] = []
        self._thread = threading.Thread(target=self._run, name="desired-layout", daemon=True)

    def start(self) -> None:
        self._manager.add_listener(lambda _status: self._wake.set())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def add_notifier(self, notifier: Notifier) -> None:
        self._notifiers.append(notifier)

    def submit(self, spec: DesiredSpec) -> None:
        with self._lock:
            self._spec = spec
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def report(self) -> Report | None:
        with self._lock:
            return self._report

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self._pass()
            except Exception:
                log.exception("desired.pass_failed")

    def _pass(self) -> None:
        with self._lock:
            spec = self._spec
        status = self._manager.status()
        inventory = status.inventory
        if spec is None or inventory is None or status.recovering:
            return
        if status.operation is not None and not status.operation.done:
            return  # a CLI change or our own step is running; look again when it ends
        current = layout_of(inventory)
        try:
            steps = self._plan(spec, current, inventory.memory_caps, len(inventory.gpus))
        except InvalidLayout as err:
            self._set(spec, Condition("SpecValid", False, "InvalidLayout", str(err)), None)
            return
        valid = Condition("SpecValid", True, "Valid", "the spec is a valid layout")
        self._manager.set_spec_drains(spec.drained)
        if not steps:
            self._manager.hold(frozenset())
            message = f"the node matches spec generation {spec.generation}"
            self._set(spec, valid, Condition("LayoutReconciled", True, "Applied", message))
            return
        if self._failed_generation == spec.generation:
            return
        step = steps[0]
        gpus = (step.gpu,) if isinstance(step, ComputeStep) else tuple(current.compute)
        self._manager.hold(frozenset(gpus))
        busy = self._manager.occupants(gpus)
        if busy:
            message = f"{_describe(step, current)} waits for: {'; '.join(busy)}"
            self._set(spec, valid, Condition("LayoutReconciled", False, "Draining", message))
            return
        self._set(
            spec, valid, Condition("LayoutReconciled", False, "Switching", _describe(step, current))
        )
        self._apply(spec, valid, step)

    def _apply(self, spec: DesiredSpec, valid: Condition, step: Step) -> None:
        try:
            if isinstance(step, MemoryStep):
                op = self._manager.set_memory_mode(step.target.value)
            else:
                op = self._manager.set_compute_mode(step.gpu, step.target.value)
        except Conflict as err:
            # E.g. a pod was bound between our look and the manager's: the next pass drains.
            log.info("desired.step_refused", step=str(step), reason=str(err))
            return
        last = op.wait()
        if last is not None and last.phase is OperationPhase.FAILED:
            self._failed_generation = spec.generation
            self._manager.hold(frozenset())
            failed = Condition("LayoutReconciled", False, "Failed", last.message)
            self._set(spec, valid, failed)
        self._wake.set()  # the next step, or Applied

    @staticmethod
    def _plan(
        spec: DesiredSpec,
        current: NodeLayout,
        caps: frozenset[MemoryMode] | None,
        gpu_count: int,
    ) -> list[Step]:
        unknown = sorted((set(spec.compute) | set(spec.drained)) - set(current.compute))
        if unknown:
            raise InvalidLayout(
                f"no GPU {', '.join(map(str, unknown))} on this node (GPUs 0-{gpu_count - 1})"
            )
        desired = NodeLayout(spec.memory or current.memory, spec.compute)
        return layout_steps(current, desired, caps)

    def _set(self, spec: DesiredSpec, valid: Condition, progress: Condition | None) -> None:
        with self._lock:
            before = self._report
            kept = () if before is None else before.conditions
            old = {c.type: c for c in kept}
            new = dict(old, SpecValid=valid)
            if progress is not None:
                new[progress.type] = progress
            report = Report(spec.generation, tuple(new.values()))
            if report == before:
                return
            self._report = report
        for cond in new.values():
            prior = old.get(cond.type)
            if prior is None or prior.reason != cond.reason:
                log.info("desired.condition", type=cond.type, reason=cond.reason, msg=cond.message)
                for notify in self._notifiers:
                    notify(cond.reason, cond.message, cond.reason in _WARNINGS)
        for listener in self._listeners:
            listener()


def _describe(step: Step, current: NodeLayout) -> str:
    if isinstance(step, MemoryStep):
        return f"the node {current.memory.value} -> {step.target.value}"
    before = current.compute.get(step.gpu)
    return f"gpu {step.gpu} {before.value if before else '?'} -> {step.target.value}"
