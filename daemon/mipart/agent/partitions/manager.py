"""PartitionManager: the one place that changes a node's partitions.

Every change follows the same path: validate against the partition model before the hardware
is touched; refuse if a GPU has processes; persist the intent; drain, switch, verify; persist
the outcome. One change runs at a time on a node, because a memory-mode change reloads the
driver under every GPU and amdsmi handles go stale after any change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from mipart.agent.hardware.port import GpuHardware, HardwareError
from mipart.agent.partitions.errors import Conflict, InvalidRequest, Unavailable
from mipart.agent.partitions.operations import GpuPhase, Operation, OperationEvent, OperationPhase
from mipart.agent.partitions.store import ManagerState, PendingOperation, StateStore
from mipart.geometry import (
    ComputeMode,
    ComputeStep,
    InvalidLayout,
    MemoryMode,
    MemoryStep,
    NodeInventory,
    NodeLayout,
    auto_compute_mode,
    check_combination,
    check_memory_change,
    describe_processes,
    layout_steps,
    parse_compute_mode,
    parse_memory_mode,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Everything a reader of the node needs, published as one immutable snapshot."""

    version: int
    inventory: NodeInventory | None
    phases: dict[int, GpuPhase] = field(default_factory=dict)
    drained: frozenset[int] = frozenset()
    desired: NodeLayout | None = None
    # The memory mode requested but not yet applied by a reload, if a change is under way.
    pending_memory: MemoryMode | None = None
    operation: Operation | None = None
    failures: dict[int, str] = field(default_factory=dict)
    hardware_error: str | None = None
    recovering: bool = False


Listener = Callable[[NodeStatus], None]
# GPU indexes -> who holds an allocation on them (e.g. "ns/pod on gpu2-spx-0"). Injected by
# the Kubernetes side, which sees the pods; the manager itself knows nothing of Kubernetes.
OccupantCheck = Callable[[tuple[int, ...]], list[str]]
# (operation, its last event, seconds it took), called once a change has ended.
OperationListener = Callable[[Operation, OperationEvent, float], None]


def layout_of(inventory: NodeInventory) -> NodeLayout:
    return NodeLayout(inventory.memory_mode, {g.index: g.compute_mode for g in inventory.gpus})


class PartitionManager:
    def __init__(
        self,
        hardware: GpuHardware,
        store: StateStore,
        *,
        reload_estimate_s: float = 140.0,
        poll_interval_s: float = 2.0,
        occupants: OccupantCheck | None = None,
    ) -> None:
        self._hw = hardware
        self._occupants = occupants
        self._store = store
        self._reload_estimate_s = reload_estimate_s
        self._poll_interval_s = poll_interval_s
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._state = store.load()
        self._status = NodeStatus(version=0, inventory=None)
        self._phases: dict[int, GpuPhase] = {}
        self._operation: Operation | None = None
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._listeners: list[Listener] = []
        self._operation_listeners: list[OperationListener] = []
        self._recovering = threading.Event()
        self._recovered = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Read the hardware now; in the background, recover an interrupted change, reconcile
        to the desired layout (minutes, if a reload is needed), then poll."""
        self._recovering.set()
        self.refresh()
        self._poller = threading.Thread(target=self._recover_then_poll, name="manager", daemon=True)
        self._poller.start()

    def wait_recovered(self, timeout: float | None = None) -> bool:
        return self._recovered.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        op = self._operation
        if op is not None and not op.done:
            # Intent is persisted; the next start resumes or rolls back.
            log.warning("manager.stop_during_operation", operation=op.id)

    def set_occupant_check(self, occupants: OccupantCheck) -> None:
        """Refuse changes on GPUs that ``occupants`` reports as allocated
        (docs/daemon.md#changing-modes)."""
        self._occupants = occupants

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_operation_listener(self, listener: OperationListener) -> None:
        self._operation_listeners.append(listener)

    # -- reading ---------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        with self._lock:
            return self._status

    def wait_for_change(self, after_version: int, timeout: float) -> NodeStatus:
        with self._changed:
            self._changed.wait_for(lambda: self._status.version > after_version, timeout)
            return self._status

    def refresh(self) -> NodeStatus:
        """Read the hardware and publish a new snapshot if anything changed."""
        if self._hardware_in_use():
            return self.status()
        try:
            inventory: NodeInventory | None = self._hw.inventory()
            error = None
        except HardwareError as err:
            inventory, error = self.status().inventory, str(err)
            log.error("hardware.read_failed", error=error)
        with self._lock:
            if inventory is not None:
                for gpu in inventory.gpus:
                    held = gpu.index in self._state.held
                    self._phases.setdefault(
                        gpu.index, GpuPhase.DRAINING if held else GpuPhase.READY
                    )
            return self._publish(inventory=inventory, hardware_error=error)

    # -- changes ---------------------------------------------------------------------------

    def set_compute_mode(self, gpu: int, mode: str, *, dry_run: bool = False) -> Operation:
        target = self._parse(parse_compute_mode, mode, "compute_partition")
        with self._lock:
            inventory = self._fresh_inventory()
            if gpu not in {g.index for g in inventory.gpus}:
                raise InvalidRequest(
                    "gpu_index", f"no GPU {gpu} on this node (GPUs 0-{len(inventory.gpus) - 1})"
                )
            current = inventory.gpu(gpu)
            try:
                check_combination(target, inventory.memory_mode, inventory.memory_caps)
            except InvalidLayout as err:
                raise Conflict(f"gpu {gpu}: {err}") from None
            op = Operation("compute", target.value, (gpu,), dry_run)
            if current.compute_mode == target:
                op.emit(OperationPhase.SUCCEEDED, f"gpu {gpu} is already {target.value}", 1.0)
                return op
            self._refuse_if_busy(inventory, (gpu,))
            geometry = (
                f"{target.partition_count} partition(s) of {target.xcds_per_partition} XCD(s)"
            )
            if dry_run:
                op.emit(
                    OperationPhase.PLANNED,
                    f"would switch gpu {gpu} {current.compute_mode.value} -> {target.value}: "
                    f"{geometry}; no driver reload",
                    0.0,
                )
                return op
            self._begin(op, PendingOperation(op.id, "compute", target.value, (gpu,)))
        self._run(op, lambda: self._switch_compute(op, gpu, target))
        return op

    def set_memory_mode(self, mode: str, *, dry_run: bool = False) -> Operation:
        target = self._parse(parse_memory_mode, mode, "memory_partition")
        with self._lock:
            inventory = self._fresh_inventory()
            current = layout_of(inventory)
            gpus = tuple(g.index for g in inventory.gpus)
            try:
                check_memory_change(current, target, inventory.memory_caps)
            except InvalidLayout as err:
                raise Conflict(str(err)) from None
            op = Operation("memory", target.value, gpus, dry_run)
            if inventory.memory_mode == target:
                op.emit(OperationPhase.SUCCEEDED, f"the node is already {target.value}", 1.0)
                return op
            self._refuse_if_busy(inventory, gpus)
            auto = auto_compute_mode(target).value
            if dry_run:
                op.emit(
                    OperationPhase.PLANNED,
                    f"would set {target.value} and reload the driver on all {len(gpus)} GPUs "
                    f"(about {self._reload_estimate_s:.0f} s); every GPU comes back in {auto}",
                    0.0,
                )
                return op
            self._begin(
                op,
                PendingOperation(op.id, "memory", target.value, gpus, inventory.memory_mode.value),
            )
        self._run(op, lambda: self._switch_memory(op, target))
        return op

    def drain(self, gpu: int, drained: bool) -> NodeStatus:
        with self._lock:
            inventory = self._fresh_inventory()
            if gpu not in {g.index for g in inventory.gpus}:
                raise InvalidRequest(
                    "gpu_index", f"no GPU {gpu} on this node (GPUs 0-{len(inventory.gpus) - 1})"
                )
            marks = self._state.drained | {gpu} if drained else self._state.drained - {gpu}
            self._save(replace(self._state, drained=frozenset(marks)))
            log.info("gpu.drain" if drained else "gpu.undrain", gpu=gpu)
            return self._publish()

    def set_spec_drains(self, marks: dict[int, bool]) -> None:
        """Drain or undrain GPUs as a spec says, without a hardware read (never refused)."""
        with self._lock:
            drained = set(self._state.drained)
            drained.update(g for g, on in marks.items() if on)
            drained.difference_update(g for g, on in marks.items() if not on)
            if drained != self._state.drained:
                self._save(replace(self._state, drained=frozenset(drained)))
                self._publish()

    def hold(self, gpus: frozenset[int]) -> None:
        """Drain exactly ``gpus`` for a pending change (phase Draining); lift earlier holds."""
        with self._lock:
            before = self._state.held
            if gpus == before:
                return
            for gpu in gpus - before:
                if self._phases.get(gpu, GpuPhase.READY) is GpuPhase.READY:
                    self._phases[gpu] = GpuPhase.DRAINING
            for gpu in before - gpus:
                if self._phases.get(gpu) is GpuPhase.DRAINING:
                    self._phases[gpu] = GpuPhase.READY
            self._save(replace(self._state, held=gpus))
            log.info("gpu.hold", gpus=sorted(gpus), lifted=sorted(before - gpus))
            self._publish()

    def occupants(self, gpus: tuple[int, ...]) -> list[str]:
        """Who keeps ``gpus`` from changing: processes (amdsmi) and allocations (pods)."""
        inventory = self.status().inventory
        found: list[str] = []
        if inventory is not None:
            procs = tuple(p for g in inventory.gpus if g.index in gpus for p in g.processes)
            if procs:
                found.append(f"{len(procs)} process(es): {describe_processes(procs)}")
        if self._occupants is not None:
            found.extend(self._occupants(gpus))
        return found

    # -- the steps of a change -------------------------------------------------------------

    def _switch_compute(self, op: Operation, gpu: int, target: ComputeMode) -> None:
        self._set_phase((gpu,), GpuPhase.DRAINING)
        op.emit(OperationPhase.DRAINING, f"gpu {gpu}: no new allocations", 0.1)
        self._set_phase((gpu,), GpuPhase.SWITCHING)
        op.emit(OperationPhase.SWITCHING, f"gpu {gpu}: setting {target.value}", 0.3)
        self._hw.set_compute_mode(gpu, target)
        self._set_phase((gpu,), GpuPhase.VERIFYING)
        op.emit(OperationPhase.VERIFYING, f"gpu {gpu}: re-enumerating partitions", 0.8)
        got = self._hw.inventory().gpu(gpu)
        if got.compute_mode != target or len(got.partitions) != target.partition_count:
            raise _VerifyFailed(
                f"gpu {gpu} reports {got.compute_mode.value} with {len(got.partitions)} "
                f"partition(s) after switching to {target.value}"
            )
        self._finish(op, gpu_modes={gpu: target})
        op.emit(
            OperationPhase.SUCCEEDED,
            f"gpu {gpu} is {target.value}: {len(got.partitions)} partition(s) of "
            f"{got.partitions[0].geometry.memory_bytes / 2**30:.0f} GiB, "
            f"{got.partitions[0].geometry.compute_units} CUs",
            1.0,
        )

    def _switch_memory(self, op: Operation, target: MemoryMode) -> None:
        gpus = op.gpus
        self._set_phase(gpus, GpuPhase.DRAINING)
        op.emit(OperationPhase.DRAINING, f"all {len(gpus)} GPUs: no new allocations", 0.05)
        self._set_phase(gpus, GpuPhase.SWITCHING)
        op.emit(OperationPhase.SWITCHING, f"requesting {target.value}", 0.1)
        self._hw.set_memory_mode(target)
        self._reload(op)
        self._set_phase(gpus, GpuPhase.VERIFYING)
        op.emit(OperationPhase.VERIFYING, "re-enumerating GPUs after the reload", 0.95)
        inventory = self._hw.inventory()
        if inventory.memory_mode != target:
            raise _VerifyFailed(
                f"the node reports {inventory.memory_mode.value} "
                f"after reloading into {target.value}"
            )
        modes = {g.index: g.compute_mode for g in inventory.gpus}
        self._finish(op, gpu_modes=modes, memory=target)
        summary = ", ".join(sorted({m.value for m in modes.values()}))
        op.emit(
            OperationPhase.SUCCEEDED,
            f"the node is {target.value}; the driver left the GPUs in {summary}",
            1.0,
        )

    def _reload(self, op: Operation) -> None:
        """Reload the driver, emitting progress while the (up to minutes long) call runs."""
        outcome: list[BaseException] = []

        def reload() -> None:
            try:
                self._hw.reload_driver()
            except BaseException as err:
                outcome.append(err)

        worker = threading.Thread(target=reload, name=f"reload-{op.id}", daemon=True)
        worker.start()
        elapsed = 0.0
        tick = 1.0
        while True:
            op.emit(
                OperationPhase.RELOADING,
                f"reloading the driver: {elapsed:.0f} s of about {self._reload_estimate_s:.0f} s",
                0.1 + 0.85 * min(elapsed / self._reload_estimate_s, 0.99),
            )
            worker.join(tick)
            if not worker.is_alive():
                break
            elapsed += tick
        if outcome:
            raise outcome[0]

    # -- recovery --------------------------------------------------------------------------

    def _recover(self) -> None:
        status = self.status()
        if status.inventory is None:
            log.error("recover.no_hardware", error=status.hardware_error)
            return
        pending = self._state.operation
        if pending is not None:
            self._recover_operation(pending, status.inventory)
        inventory = self._fresh_inventory()
        if self._state.desired is None:
            self._save(replace(self._state, desired=layout_of(inventory)))
            return
        self._reconcile(inventory)

    def _recover_operation(self, pending: PendingOperation, inventory: NodeInventory) -> None:
        log.warning(
            "recover.operation", operation=pending.id, kind=pending.kind, target=pending.target
        )
        if pending.kind == "compute":
            gpu = pending.gpus[0]
            target = ComputeMode(pending.target)
            if inventory.gpu(gpu).compute_mode == target:
                self._save(
                    replace(
                        self._state,
                        operation=None,
                        desired=self._desired_or(inventory).with_compute(gpu, target),
                    )
                )
                log.info("recover.completed", operation=pending.id)
            else:
                # The switch never happened; the desired layout still holds the old mode and
                # the reconcile below decides whether to apply the change again.
                self._save(replace(self._state, operation=None))
                log.info("recover.rolled_back", operation=pending.id)
            return
        target_memory = MemoryMode(pending.target)
        if inventory.memory_mode == target_memory:
            desired = layout_of(inventory)
            self._save(replace(self._state, operation=None, desired=desired))
            log.info("recover.completed", operation=pending.id)
            return
        # The reload did not happen. Cancel the request so that a later reload (by anyone)
        # cannot apply a change we no longer track.
        try:
            self._hw.set_memory_mode(inventory.memory_mode)
        except HardwareError as err:
            log.error("recover.cancel_failed", error=str(err))
        self._save(replace(self._state, operation=None))
        log.info("recover.rolled_back", operation=pending.id)

    def _reconcile(self, inventory: NodeInventory) -> None:
        """Bring the hardware back to the desired layout, e.g. after a reboot reverted to SPX."""
        desired = self._state.desired
        assert desired is not None
        try:
            steps = layout_steps(layout_of(inventory), desired, inventory.memory_caps)
        except InvalidLayout as err:
            log.error("reconcile.invalid_desired_layout", error=str(err))
            return
        if not steps:
            return
        log.info("reconcile.start", steps=len(steps))
        for step in steps:
            try:
                if isinstance(step, MemoryStep):
                    op = self.set_memory_mode(step.target.value)
                else:
                    assert isinstance(step, ComputeStep)
                    op = self.set_compute_mode(step.gpu, step.target.value)
            except Conflict as err:
                log.warning("reconcile.blocked", step=str(step), reason=str(err))
                continue
            last = op.wait()
            log.info(
                "reconcile.step", step=str(step), result=None if last is None else last.phase.value
            )
        # A memory step resets compute modes to AUTO, so the desired layout is restored after.
        with self._lock:
            self._save(replace(self._state, desired=desired))

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _parse(parse: Callable[..., Any], value: str, field_name: str) -> Any:
        try:
            return parse(value, field=field_name)
        except InvalidLayout as err:
            raise InvalidRequest(field_name, str(err).split(": ", 1)[1]) from None

    def _fresh_inventory(self) -> NodeInventory:
        if self._recovering.is_set() and threading.current_thread() is not self._poller:
            raise Conflict(
                "the daemon is recovering its desired layout after a restart; retry soon"
            )
        if self._operation is not None and not self._operation.done:
            op = self._operation
            raise Conflict(
                f"operation {op.id} ({op.kind} -> {op.target} on GPUs "
                f"{', '.join(map(str, op.gpus))}) is in progress; wait for it to finish"
            )
        try:
            inventory = self._hw.inventory()
        except HardwareError as err:
            raise Unavailable(f"cannot read the GPUs: {err}") from err
        self._publish(inventory=inventory, hardware_error=None)
        return inventory

    def _refuse_if_busy(self, inventory: NodeInventory, gpus: tuple[int, ...]) -> None:
        processes = tuple(p for g in gpus for p in inventory.gpu(g).processes)
        where = f"gpu {gpus[0]}" if len(gpus) == 1 else "the node"
        if processes:
            raise Conflict(
                f"{where} is busy (amdsmi status BUSY): {len(processes)} process(es) use it: "
                f"{describe_processes(processes)}; stop them first"
            )
        # Allocations too: a pod may hold a partition before its process starts, and a change
        # would pull the partition from under it.
        allocated = self._occupants(gpus) if self._occupants is not None else []
        if allocated:
            shown = "; ".join(allocated[:5])
            more = f" and {len(allocated) - 5} more" if len(allocated) > 5 else ""
            raise Conflict(
                f"{where} has allocations: {shown}{more}; delete or move those pods first"
            )

    def _begin(self, op: Operation, pending: PendingOperation) -> None:
        self._save(replace(self._state, operation=pending))
        self._operation = op
        log.info(
            "operation.start", operation=op.id, kind=op.kind, target=op.target, gpus=list(op.gpus)
        )

    def _run(self, op: Operation, body: Callable[[], None]) -> None:
        def run() -> None:
            started = time.monotonic()
            try:
                body()
            except (HardwareError, _VerifyFailed) as err:
                self._fail(op, err)
            except Exception as err:
                log.exception("operation.crashed", operation=op.id)
                self._fail(op, err)
            finally:
                self.refresh()
                last = op.last
                if last is not None:
                    for listener in self._operation_listeners:
                        listener(op, last, time.monotonic() - started)

        threading.Thread(target=run, name=f"operation-{op.id}", daemon=True).start()

    def _finish(
        self, op: Operation, *, gpu_modes: dict[int, ComputeMode], memory: MemoryMode | None = None
    ) -> None:
        with self._lock:
            desired = self._state.desired or NodeLayout(memory or MemoryMode.NPS1)
            desired = NodeLayout(memory or desired.memory, {**desired.compute, **gpu_modes})
            failures = {g: r for g, r in self._state.failures.items() if g not in op.gpus}
            self._save(replace(self._state, desired=desired, operation=None, failures=failures))
            self._set_phase(op.gpus, GpuPhase.READY)
        log.info("operation.succeeded", operation=op.id)

    def _fail(self, op: Operation, err: Exception) -> None:
        status = getattr(getattr(err, "status", None), "value", None)
        verify = isinstance(err, _VerifyFailed)
        with self._lock:
            failures = dict(self._state.failures)
            if verify:
                failures.update(dict.fromkeys(op.gpus, str(err)))
            # The intent is dropped: a failed switch left the hardware as it was (amdsmi
            # refuses before changing anything), and a failed verify is shown as Failed.
            self._save(replace(self._state, operation=None, failures=failures))
            self._set_phase(op.gpus, GpuPhase.FAILED if verify else GpuPhase.READY)
        log.error("operation.failed", operation=op.id, error=str(err), status=status)
        op.emit(OperationPhase.FAILED, str(err), 1.0, hardware_status=status)

    def _desired_or(self, inventory: NodeInventory) -> NodeLayout:
        return self._state.desired or layout_of(inventory)

    def _hardware_in_use(self) -> bool:
        op = self._operation
        return op is not None and not op.done and op.kind == "memory"

    def _set_phase(self, gpus: tuple[int, ...], phase: GpuPhase) -> None:
        with self._lock:
            self._phases.update(dict.fromkeys(gpus, phase))
            self._publish()

    def _save(self, state: ManagerState) -> None:
        self._store.save(state)
        self._state = state

    def _publish(self, **changes: Any) -> NodeStatus:
        with self._lock:
            op = self._operation
            pending = (
                MemoryMode(op.target)
                if op is not None and op.kind == "memory" and not op.done
                else None
            )
            candidate = replace(
                self._status,
                phases=dict(self._phases),
                drained=self._state.drained | self._state.held,
                desired=self._state.desired,
                pending_memory=pending,
                operation=op,
                failures=dict(self._state.failures),
                recovering=self._recovering.is_set(),
                **changes,
            )
            if candidate == replace(self._status, version=candidate.version):
                return self._status
            self._status = replace(candidate, version=self._status.version + 1)
            self._changed.notify_all()
            status = self._status
        for listener in self._listeners:
            listener(status)
        return status

    def _recover_then_poll(self) -> None:
        try:
            self._recover()
        except Exception:
            log.exception("recover.failed")
        finally:
            self._recovering.clear()
            self._recovered.set()
            self._publish()
        while not self._stopping.wait(self._poll_interval_s):
            try:
                self.refresh()
            except Exception:
                log.exception("inventory.poll_failed")


class _VerifyFailed(Exception):
    """The hardware does not report what a change should have produced."""
