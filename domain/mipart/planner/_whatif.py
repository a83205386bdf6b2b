"""The cluster as the re-partition planner imagines it while it decides (internal).

Every fit question goes to the placement engine: the imagined cluster is a ClusterView in
which idle GPUs that the plan has not given a mode yet are hidden (drained), and an option —
"give GPUs G of node N compute mode M" — is judged by placing the waiting pods on a one-node
copy of N with G in mode M, exactly as the extender would place them once the change lands.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

from mipart.geometry import ComputeMode, MemoryMode, gpu_of_partition_id, is_compatible
from mipart.placement import (
    QOS_RANK,
    Allocation,
    ClusterView,
    NodeCapacity,
    PartitionRequest,
    PlacementConflict,
    allocation_for,
)
from mipart.planner._nodes import GpuPlan, NodePlan, natural_over
from mipart.planner._types import Admission, PlannerPolicy, Promise, Waiting


@dataclass(frozen=True, slots=True)
class Given:
    """What one planning round starts from: the nodes as planned at the start, the
    allocations, the demand in queue order and in packing order, the clock and the policy."""

    plans: tuple[NodePlan, ...]
    allocations: tuple[Allocation, ...]
    demand: Sequence[Waiting]
    order: Sequence[int]
    now: float
    policy: PlannerPolicy

    @property
    def budget(self) -> int:
        """GPUs that may start changing this round (the cluster-wide bound)."""
        return self.policy.max_changing - sum(n.snapshot.changing for n in self.plans)


@dataclass(frozen=True, slots=True)
class Option:
    """Give ``gpus`` of ``node`` compute ``mode``; what the waiting pods would then get."""

    node: str
    mode: ComputeMode
    gpus: tuple[int, ...]
    changes: tuple[int, ...]  # those of ``gpus`` whose mode changes
    placements: tuple[tuple[int, Allocation], ...]  # (position in the demand, allocation)
    placed_bytes: int
    used_bytes: int  # memory of the partitions the placements take
    qos_rank: int  # the best QoS class among them (0: latency)

    @property
    def fill(self) -> float:
        """How much of the partitions it uses the waiting pods' limits fill (0..1)."""
        return self.placed_bytes / self.used_bytes


class WhatIf:
    """The imagined cluster: a ClusterView of the plan, and the demand not yet provided for."""

    def __init__(
        self,
        nodes: Iterable[NodePlan],
        allocations: Iterable[Allocation],
        demand: Sequence[Waiting],
        penalty: float,
        order: Sequence[int],
    ) -> None:
        self.nodes = {node.name: node for node in nodes}
        self.demand = demand
        self.penalty = penalty  # what a change counts against an option (PlannerPolicy)
        self.pending = list(order)  # positions in the demand not provided for, in packing order
        self.set_aside: set[str] = set()  # nodes options() does not offer (see plan)
        self._natural: dict[tuple[frozenset[MemoryMode], int], list[ComputeMode | None]] = {}
        self.strict = True
        self._tried: dict[Hashable, Option | None] = {}
        self.view = ClusterView((n.capacity() for n in self.nodes.values()), allocations)

    def admit_on_fixed(self) -> tuple[list[Admission], list[Admission]]:
        """Place, in packing order, the pods that fit the partitions no plan can change (those
        of busy GPUs, and of GPUs switching to a mode already asked for), as the extender
        would: best score, then node name. Those on partitions that exist now are admitted,
        those on switching GPUs promised."""
        admitted: list[Admission] = []
        promised: list[Admission] = []
        placed: list[int] = []
        failed: set[PartitionRequest] = set()
        for pos in self.pending:
            request = self.demand[pos].request
            if request in failed:
                continue
            best = self.view.evaluate(request).best()
            if best is None:
                failed.add(request)
                continue
            allocation = allocation_for(best, request, pod=_pod(pos), pod_uid=_pod(pos))
            self.view.reserve(allocation)
            placed.append(pos)
            node = self.nodes[best.node]
            promise = Promise(best.node, allocation.partition_ids, best.compute_mode)
            # A pod counted on a GPU that is still switching waits for it to land.
            ready = all(node.is_real(gpu) for gpu in best.gpus)
            (admitted if ready else promised).append(Admission(pos, promise))
        self._forget(placed)
        return admitted, promised

    def keep_promises(self) -> list[Option]:
        """Count every pod that was promised partitions on them again, where they can still
        be had: each GPU in the promised mode already (or switching to it), or free for the
        plan to give that mode; the partitions free. One option per node and mode, committed;
        a promise that cannot be kept is dropped and its pod planned like any other."""
        kept: dict[tuple[str, ComputeMode], list[tuple[int, Promise]]] = {}
        for pos in self.pending:
            promise = self.demand[pos].promise
            if promise is not None and self._keepable(promise):
                kept.setdefault((promise.node, promise.compute_mode), []).append((pos, promise))
        options: list[Option] = []
        for (name, mode), promises in kept.items():
            node = self.nodes[name]
            gpus = sorted({_gpu(pid) for _, p in promises for pid in p.partition_ids})
            capacity = node.capacity(dict.fromkeys(gpus, mode))
            trial = ClusterView((capacity,), self.view.allocations(name))
            placements: list[tuple[int, Allocation]] = []
            for pos, promise in promises:
                request = self.demand[pos].request
                allocation = Allocation(_pod(pos), _pod(pos), name, promise.partition_ids,
                                        request.memory_bytes, request.sharing)  # fmt: skip
                try:
                    trial.reserve(allocation)
                except PlacementConflict:
                    continue  # taken meanwhile, or no longer there: plan the pod afresh
                placements.append((pos, allocation))
            if placements:
                option = self._described(node, mode, tuple(gpus), placements, capacity)
                self.commit(option)
                options.append(option)
        return options

    def _keepable(self, promise: Promise) -> bool:
        node = self.nodes.get(promise.node)
        if node is None or node.name in self.set_aside:
            return False
        if not is_compatible(promise.compute_mode, node.memory):
            return False
        for pid in promise.partition_ids:
            gpu = node.gpus.get(_gpu(pid))
            if gpu is None or not (gpu.free or gpu.mode is promise.compute_mode):
                return False
        return True

    def options(self) -> list[Option]:
        """For every node with free GPUs and every mode: the option that gives that mode to as
        few free GPUs as the first pod that naturally needs it there needs (GPUs already in the
        mode first, then GPUs out of their cool-down); and the option of keeping free GPUs in
        that mode for pods that need smaller partitions — what a change must beat."""
        found: list[Option] = []
        for node in self.nodes.values():
            free = [g for g in node.gpus.values() if g.free]
            if not free or node.name in self.set_aside:
                continue
            signature = node.signature(self.view.allocations(node.name))
            natural = self._natural_on(node)
            for mode in ComputeMode:
                if not is_compatible(mode, node.memory):
                    continue
                queue = [pos for pos in self.pending if natural[pos] is mode]
                if queue:
                    free.sort(key=lambda g: (g.real is not mode, g.cooling, g.index))
                    tp = self.demand[queue[0]].request.partitions
                    need = min(len(free), -(-tp // mode.partition_count))
                    found += self._option(node, signature, mode, free[:need], queue)
                kept = [g for g in free if g.real is mode]
                smaller = [
                    pos
                    for pos in self.pending
                    if (n := natural[pos]) is not None and n.partition_count > mode.partition_count
                ]
                if kept and smaller and node.memory is node.snapshot.memory_mode:
                    found += self._option(node, signature, mode, kept[:1], smaller)
        return found

    def _option(
        self,
        node: NodePlan,
        signature: Hashable,
        mode: ComputeMode,
        gpus: list[GpuPlan],
        queue: list[int],
    ) -> list[Option]:
        # Nodes in the same state facing the same queue have the same option: most nodes of a
        # fresh cluster, and every node the last commit did not touch.
        chosen = tuple(g.index for g in gpus)
        key = (signature, mode, chosen, tuple(queue))
        if key not in self._tried:
            self._tried[key] = self.try_option(node, mode, chosen, queue)
        option = self._tried[key]
        return [] if option is None else [_on(option, node.name)]

    def try_option(
        self, node: NodePlan, mode: ComputeMode, gpus: tuple[int, ...], queue: list[int]
    ) -> Option | None:
        capacity = node.capacity(dict.fromkeys(gpus, mode))
        trial = ClusterView((capacity,), self.view.allocations(node.name))
        placements: list[tuple[int, Allocation]] = []
        # Capacity only shrinks while the trial fills, so a request that failed fails again.
        failed: set[PartitionRequest] = set()
        for pos in queue:
            request = self.demand[pos].request
            if request in failed or request.compute_mode not in (None, mode):
                continue
            pinned = replace(request, compute_mode=mode)
            placement = trial.evaluate(pinned, (node.name,)).feasible.get(node.name)
            if placement is None:
                failed.add(request)
                continue
            allocation = allocation_for(placement, pinned, pod=_pod(pos), pod_uid=_pod(pos))
            trial.reserve(allocation)
            placements.append((pos, allocation))
        if not placements:
            return None
        return self._described(node, mode, gpus, placements, capacity)

    def _described(
        self,
        node: NodePlan,
        mode: ComputeMode,
        gpus: tuple[int, ...],
        placements: list[tuple[int, Allocation]],
        capacity: NodeCapacity,
    ) -> Option:
        sizes = {p.geometry.id: p.geometry.memory_bytes for p in capacity.partitions}
        used = {pid for _, a in placements for pid in a.partition_ids}
        return Option(
            node=node.name,
            mode=mode,
            gpus=gpus,
            # Only a GPU the plan has not given a mode yet changes: one switching already does not.
            changes=tuple(g for g in gpus if node.gpus[g].free and node.changes(g, mode)),
            placements=tuple(placements),
            placed_bytes=sum(a.total_bytes for _, a in placements),
            used_bytes=sum(sizes[pid] for pid in used),
            qos_rank=min(QOS_RANK[self.demand[pos].request.qos] for pos, _ in placements),
        )

    def commit(self, option: Option) -> None:
        node = self.nodes[option.node]
        for index in option.gpus:
            node.gpus[index].mode = option.mode
            node.gpus[index].committed = True
        self.view.set_node(node.capacity())
        for _, allocation in option.placements:
            self.view.reserve(allocation)
        self._forget(pos for pos, _ in option.placements)

    def adopt(self, node: NodePlan, options: Iterable[Option]) -> None:
        """Take ``node`` as planned elsewhere (a reload what-if), with the pods placed there."""
        for gpu in node.gpus.values():
            gpu.committed = True
        self.nodes[node.name] = node
        self.view.set_node(node.capacity())
        placements = [p for option in options for p in option.placements]
        for _, allocation in placements:
            self.view.reserve(allocation)
        self._forget(pos for pos, _ in placements)

    def counted(self, option: Option) -> tuple[list[Admission], list[Admission]]:
        """The option's pods as admissions: those whose partitions all stay as the hardware
        has them (release them now), and those that wait for a change (promises)."""
        node = self.nodes[option.node]
        parts = node.snapshot.capacity.partitions
        real = {p.geometry.id for p in parts if node.is_real(p.geometry.gpu_index)}
        admitted: list[Admission] = []
        promised: list[Admission] = []
        for pos, allocation in option.placements:
            counted = Admission(pos, Promise(option.node, allocation.partition_ids, option.mode))
            (admitted if set(allocation.partition_ids) <= real else promised).append(counted)
        return admitted, promised

    def _natural_on(self, node: NodePlan) -> list[ComputeMode | None]:
        """Every pod's natural mode on ``node``, by position in the demand.

        Strict: natural over every memory mode the node supports, so a node whose memory mode
        forbids a pod's natural mode (an 8B replica on an NPS2 node, DPX only) does not take
        it at a poor fit, and can stay idle for a memory-mode change. Lenient: natural under
        the node's memory mode as it is.
        """
        memory = node.snapshot.memory_caps | {node.memory} if self.strict else {node.memory}
        key = (frozenset(memory), len(node.gpus))
        natural = self._natural.get(key)
        if natural is None:
            natural = self._natural[key] = [
                natural_over(w.request, key[0], key[1]) for w in self.demand
            ]
        if self.strict:  # a natural mode the node's memory mode forbids: not here
            natural = [n if n and is_compatible(n, node.memory) else None for n in natural]
        return natural

    def _forget(self, positions: Iterable[int]) -> None:
        gone = set(positions)
        self.pending = [pos for pos in self.pending if pos not in gone]


def _on(option: Option, node: str) -> Option:
    """``option`` as it applies to ``node``, a node in the same state."""
    if option.node == node:
        return option
    placements = tuple((pos, replace(a, node=node)) for pos, a in option.placements)
    return replace(option, node=node, placements=placements)


def _gpu(partition_id: str) -> int:
    return -1 if (gpu := gpu_of_partition_id(partition_id)) is None else gpu


def _pod(position: int) -> str:
    return f"waiting-{position}"
