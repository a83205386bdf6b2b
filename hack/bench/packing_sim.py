"""The packing benchmark's cluster: the placement engine, the planner and simulated daemons.

Pods are released to the placement engine in queue order and bound where the extender would
bind them (best score, then node name). With ``planner`` set, every tick runs the
re-partition planner, writes its decisions into the nodes' desired layouts (GPUNode.spec),
releases only the pods it admits, each to the partitions the plan counted it on, gives the
promises of the others back to the next round (as the controller does), and lets the daemons
reconcile: a compute-mode change takes
``switch_s``, a memory-mode change a driver reload of ``reload_s`` (AMD: up to 140 s), and a
changing GPU takes no pods meanwhile. Without a planner the layouts never change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout
from mipart.geometry import layout_steps as steps_between
from mipart.placement import (
    QOS_RANK,
    Allocation,
    ClusterView,
    NodeCapacity,
    PartitionRequest,
    allocation_for,
    instance_budget,
)
from mipart.planner import (
    Admission,
    ComputeChange,
    Eviction,
    MemoryChange,
    NodeSnapshot,
    PlannerPolicy,
    Promise,
    Waiting,
    natural_mode,
    plan,
)


@dataclass(frozen=True, slots=True)
class Timing:
    switch_s: float = 30.0  # a compute-mode switch (no published figure; a guess)
    reload_s: float = 140.0  # a memory-mode change: driver reload
    step_s: float = 15.0  # how often the controller plans and releases


@dataclass(slots=True)
class _InFlight:
    layout: NodeLayout  # what the node will be once it lands
    done_at: float
    gpus: frozenset[int]
    reload: bool


@dataclass(slots=True)
class Stats:
    compute_changes: int = 0
    memory_changes: int = 0
    most_changing: int = 0  # GPUs changing at once, at most
    evictions: int = 0
    # (when, node, GPU) of every compute-mode change decided
    changes: list[tuple[float, str, int]] = field(default_factory=list)


class Cluster:
    """Nodes, daemons and the queue, advanced one tick at a time."""

    def __init__(
        self,
        layouts: Mapping[str, NodeLayout],
        *,
        planner: PlannerPolicy | None = None,
        timing: Timing = Timing(),
        memory_caps: frozenset[MemoryMode] = frozenset(MemoryMode),
    ) -> None:
        self.actual = dict(layouts)
        self.policy = planner
        self.timing = timing
        self.caps = memory_caps
        self.view = ClusterView(NodeCapacity.from_layout(n, lay) for n, lay in layouts.items())
        self.flying: dict[tuple[str, int | None], _InFlight] = {}
        self.gpu_changed_at: dict[str, dict[int, float]] = {n: {} for n in layouts}
        self.memory_changed_at: dict[str, float] = {}
        self.waiting: dict[str, tuple[PartitionRequest, float]] = {}  # in queue order
        self.bound: dict[str, Allocation] = {}
        self.promises: dict[str, Promise] = {}  # what the last plan counted for who waits
        self.arrived_at: dict[str, float] = {}
        self.requests: dict[str, PartitionRequest] = {}
        self.aging_after_s: float | None = None  # see overtaking()
        self.overtaken: set[str] = set()
        self.bound_at: dict[str, float] = {}
        self.stats = Stats()
        self.now = 0.0

    # --- pods -------------------------------------------------------------------------

    def arrive(self, pods: Iterable[tuple[str, PartitionRequest]]) -> None:
        for name, request in pods:
            self.waiting[name] = (request, self.now)
            self.arrived_at[name] = self.now
            self.requests[name] = request

    def depart(self, names: Iterable[str]) -> None:
        for name in names:
            self.waiting.pop(name, None)
            self.promises.pop(name, None)
            if self.bound.pop(name, None) is not None:
                self.view.remove_allocation(name)

    def overtaking(self, name: str, allocation: Allocation) -> set[str]:
        """Pods that have waited past the aging bound and that ``name``, younger and of the
        same or a less urgent class, overtakes by binding to partitions they fit: what aging
        promises never happens (``aging_after_s`` set, else nothing is checked)."""
        if self.aging_after_s is None:
            return set()
        request, since = self.waiting[name]
        gpus = len(self.actual[allocation.node].compute)
        sizes = self.view.capacity(allocation.node)
        assert sizes is not None
        size = min(p.geometry.memory_bytes for p in sizes.partitions
                   if p.geometry.id in allocation.partition_ids)  # fmt: skip
        return {
            other
            for other, (waiting, waited) in self.waiting.items()
            if other != name
            and self.now - waited > self.aging_after_s
            and waited < since
            and QOS_RANK[waiting.qos] <= QOS_RANK[request.qos]
            and waiting.partitions == len(allocation.partition_ids)
            and waiting.memory_bytes <= instance_budget(size)
            and natural_mode(waiting, MemoryMode.NPS1, gpus)
            == natural_mode(request, MemoryMode.NPS1, gpus)
        }

    # --- time -------------------------------------------------------------------------

    def tick(self) -> bool:
        """Plan, release, reconcile; advance the clock. False once nothing more can happen."""
        self._land()
        if self.policy is None:
            self._release_in_order()
            self.now += self.timing.step_s
            return False
        names = list(self.waiting)
        demand = [
            Waiting(r, since, n, self.promises.get(n)) for n, (r, since) in self.waiting.items()
        ]
        classes = {n: self.requests[n].qos for n in self.bound}
        answer = plan(self._snapshots(), self.view.allocations(), demand, now=self.now,
                      policy=self.policy, classes=classes)  # fmt: skip
        self._apply(answer.decisions)
        self.promises = {names[a.position]: a.promise for a in answer.promised}
        released = self._release_admitted(names, answer.admitted)
        self._evict(answer.evictions)
        busy = bool(self.flying or answer.decisions or answer.deferrals)
        self.now += self.timing.step_s
        return busy or bool(released)

    def run(self, horizon_s: float) -> None:
        """Tick until nothing changes any more (or the horizon)."""
        while self.now <= horizon_s and self.tick():
            pass

    def _release_in_order(self) -> list[str]:
        """Without a planner: bind what fits, in queue order, where the extender would (best
        score, then node name)."""
        released: list[str] = []
        failed: set[PartitionRequest] = set()
        for name, (request, _) in list(self.waiting.items()):
            if request in failed:
                continue
            best = self.view.evaluate(request).best()
            if best is None:
                failed.add(request)
                continue
            self._bind(name, allocation_for(best, request, pod=name, pod_uid=name))
            released.append(name)
        return released

    def _release_admitted(self, names: list[str], admitted: Iterable[Admission]) -> list[str]:
        """Bind each admitted pod to the partitions the plan counted it on (the extender
        holds a released pod to them)."""
        released: list[str] = []
        for admission in admitted:
            name = names[admission.position]
            request, _ = self.waiting[name]
            allocation = Allocation(name, name, admission.node, admission.partition_ids,
                                    request.memory_bytes, request.sharing)  # fmt: skip
            self.overtaken |= self.overtaking(name, allocation)
            self._bind(name, allocation)
            released.append(name)
        return released

    def _evict(self, evictions: Iterable[Eviction]) -> None:
        """Evicted pods go, and come back as new pods that queue again (their owner, a
        Deployment's ReplicaSet, recreates them)."""
        for eviction in evictions:
            for name in eviction.pod_uids:
                request = self.requests[name]
                self.depart([name])
                self.arrive([(name, request)])
                self.stats.evictions += 1

    def _bind(self, name: str, allocation: Allocation) -> None:
        self.view.reserve(allocation)
        self.bound[name] = allocation
        self.bound_at[name] = self.now
        del self.waiting[name]

    # --- daemons ------------------------------------------------------------------------

    def _apply(self, decisions: Iterable[ComputeChange | MemoryChange]) -> None:
        """Write decisions into the desired layouts and start the daemons on them."""
        desired: dict[str, NodeLayout] = {}
        reloads: set[str] = set()
        for decision in decisions:
            node = decision.node
            base = desired.get(node, self.actual[node])
            if isinstance(decision, MemoryChange):
                desired[node] = base.after_reload(decision.target)
                reloads.add(node)
            else:
                desired[node] = base.with_compute(decision.gpu, decision.target)
                self.stats.compute_changes += 1
                self.stats.changes.append((self.now, node, decision.gpu))
        for node, layout in desired.items():
            steps_between(self.actual[node], layout)  # raises if the daemon would refuse it
            reload = node in reloads
            self.stats.memory_changes += reload
            if reload:
                done = self.now + self.timing.reload_s + self.timing.switch_s
                self.flying[node, None] = _InFlight(layout, done, frozenset(layout.compute), True)
                continue
            for gpu, mode in layout.compute.items():
                if self.actual[node].compute[gpu] is not mode:
                    only = self.actual[node].with_compute(gpu, mode)
                    done = self.now + self.timing.switch_s
                    self.flying[node, gpu] = _InFlight(only, done, frozenset({gpu}), False)
        changing = sum(len(f.gpus) for f in self.flying.values())
        self.stats.most_changing = max(self.stats.most_changing, changing)
        for node in desired:
            self._publish(node)

    def _land(self) -> None:
        for key, flight in list(self.flying.items()):
            if flight.done_at > self.now:
                continue
            node, gpu = key
            del self.flying[key]
            if flight.reload:
                self.actual[node] = flight.layout
                self.memory_changed_at[node] = flight.done_at
            else:
                assert gpu is not None
                self.actual[node] = self.actual[node].with_compute(gpu, flight.layout.compute[gpu])
            for changed in flight.gpus:
                self.gpu_changed_at[node][changed] = flight.done_at
            self._publish(node)

    def _changing(self, node: str) -> dict[int, ComputeMode]:
        """GPUs with a change in flight, and the mode each is changing to."""
        return {
            g: f.layout.compute[g] for (n, _), f in self.flying.items() if n == node for g in f.gpus
        }

    def _publish(self, node: str) -> None:
        """What the daemon reports: the actual layout, changing GPUs drained."""
        capacity = NodeCapacity.from_layout(
            node, self.actual[node], drained_gpus=self._changing(node).keys()
        )
        self.view.set_node(capacity)

    def _snapshots(self) -> list[NodeSnapshot]:
        snapshots = []
        for node in self.actual:
            reload = self.flying.get((node, None))
            capacity = self.view.capacity(node)
            assert capacity is not None
            snapshots.append(
                NodeSnapshot(
                    capacity=capacity,
                    memory_caps=self.caps,
                    gpu_changed_at=self.gpu_changed_at[node],
                    memory_changed_at=self.memory_changed_at.get(node),
                    switching=self._changing(node),
                    reloading=reload.layout.memory if reload else None,
                )
            )
        return snapshots
