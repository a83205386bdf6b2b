"""The cluster as the re-partition planner imagines it while it decides (internal).

Every fit question goes to the placement engine: the imagined cluster is a ClusterView in
which idle GPUs that the plan has not given a mode yet are hidden (drained), and an option —
"give GPUs G of node N compute mode M" — is judged by placing the waiting pods on a one-node
copy of N with G in mode M, exactly as the extender would place them once the change lands.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

from mipart.geometry import ComputeMode, MemoryMode, is_compatible
from mipart.placement import QOS_RANK, Allocation, ClusterView, PartitionRequest, allocation_for
from mipart.planner._nodes import GpuPlan, NodePlan, natural_over
from mipart.planner._types import Admission, Waiting


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
    ) -> None:
        self.nodes = {node.name: node for node in nodes}
        self.demand = demand
        self.penalty = penalty  # what a change counts against an option (PlannerPolicy)
        self.pending = list(range(len(demand)))
        self._natural: dict[tuple[frozenset[MemoryMode], int], list[ComputeMode | None]] = {}
        self.strict = True
        self._tried: dict[Hashable, Option | None] = {}
        self.view = ClusterView((n.capacity() for n in self.nodes.values()), allocations)

    def admit_on_fixed(self) -> list[Admission]:
        """Place, in queue order, the pods that fit the partitions no plan can change (those of
        busy GPUs, and of GPUs switching to a mode already asked for), as the extender would:
        best score, then node name. Those on partitions that exist now are admitted."""
        admitted: list[Admission] = []
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
            self.view.reserve(allocation_for(best, request, pod=_pod(pos), pod_uid=_pod(pos)))
            placed.append(pos)
            # A pod counted on a GPU that is still switching waits for it to land.
            node = self.nodes[best.node]
            if all(node.is_real(gpu) for gpu in best.gpus):
                admitted.append(Admission(pos, best.compute_mode, best.node))
        self._forget(placed)
        return admitted

    def options(self) -> list[Option]:
        """For every node with free GPUs and every mode: the option that gives that mode to as
        few free GPUs as the first pod that naturally needs it there needs (GPUs already in the
        mode first, then GPUs out of their cool-down); and the option of keeping free GPUs in
        that mode for pods that need smaller partitions — what a change must beat."""
        found: list[Option] = []
        for node in self.nodes.values():
            free = [g for g in node.gpus.values() if g.free]
            if not free:
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
        sizes = {p.geometry.id: p.geometry.memory_bytes for p in capacity.partitions}
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
        used = {pid for _, a in placements for pid in a.partition_ids}
        return Option(
            node=node.name,
            mode=mode,
            gpus=gpus,
            changes=tuple(g for g in gpus if node.changes(g, mode)),
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

    def releasable(self, option: Option) -> list[Admission]:
        """The option's pods whose partitions all stay as the hardware has them."""
        node = self.nodes[option.node]
        parts = node.snapshot.capacity.partitions
        real = {p.geometry.id for p in parts if node.is_real(p.geometry.gpu_index)}
        return [
            Admission(pos, option.mode, option.node)
            for pos, a in option.placements
            if set(a.partition_ids) <= real
        ]

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


def _pod(position: int) -> str:
    return f"waiting-{position}"
