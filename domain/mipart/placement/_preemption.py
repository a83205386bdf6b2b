"""Which lower-priority pods to evict so that a pod fits on a node.

Exact for the inputs a node produces (at most 64 partitions, a few pods on each): subsets of the
evictable pods are tried by increasing size, and within a size by total memory, so the answer
is the fewest pods, then the least memory. Only pods on partitions that could ever hold the
request are considered. A search that would exceed ``max_checks`` subsets falls back to a
greedy answer that is minimal (no victim can be spared) but not necessarily minimum.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations

from mipart.geometry import ComputeMode, gpu_of_partition_id
from mipart.placement import _reasons as reasons
from mipart.placement._node_state import NodeState
from mipart.placement._parts import Part
from mipart.placement._types import (
    Allocation,
    NodeCapacity,
    PartitionRequest,
    Sharing,
    instance_budget,
    instance_footprint,
)


def victims_for(
    request: PartitionRequest,
    node: NodeCapacity,
    allocations: Iterable[Allocation],
    candidates: Iterable[Allocation],
    *,
    max_checks: int = 20_000,
) -> tuple[Allocation, ...] | None:
    """The fewest (then least memory) ``candidates`` whose eviction makes ``request`` fit.

    ``allocations``: everything on the node (allocations for other nodes are ignored);
    ``candidates``: those the caller may evict (lower priority), matched by pod UID. Returns
    ``()`` if the request already fits, None if no eviction of candidates makes it fit.
    """
    on_node = [a for a in allocations if a.node == node.name]
    state = NodeState(node, on_node)
    if state.check(request) is None:
        return ()
    if state.block_reason in reasons.UNRESOLVABLE:
        return None
    trial = _Trial(state, request)
    evictable = {c.pod_uid for c in candidates}
    relevant = sorted(
        (a for a in on_node if a.pod_uid in evictable and trial.touches(a)),
        key=lambda a: (a.total_bytes, a.pod_uid),
    )
    if not trial.fits(relevant):
        return None
    checks = 0
    for size in range(1, len(relevant) + 1):
        best: tuple[Allocation, ...] | None = None
        for combo in combinations(relevant, size):
            checks += 1
            if checks > max_checks:
                return _greedy(trial, relevant)
            if best is not None and _memory(combo) >= _memory(best):
                continue
            if trial.fits(combo):
                best = combo
        if best is not None:
            return best
    raise AssertionError("unreachable: evicting every relevant candidate fits")


def _memory(victims: Sequence[Allocation]) -> int:
    return sum(a.total_bytes for a in victims)


def _greedy(trial: _Trial, relevant: list[Allocation]) -> tuple[Allocation, ...]:
    """Evict everything relevant, then spare pods one by one, small ones first."""
    victims = list(relevant)
    for allocation in relevant:
        spared = [v for v in victims if v is not allocation]
        if trial.fits(spared):
            victims = spared
    return tuple(victims)


class _Trial:
    """Would the request fit if these allocations were gone? O(partitions that could hold it)."""

    def __init__(self, state: NodeState, request: PartitionRequest) -> None:
        self.need = request.memory_bytes
        self.k = request.partitions
        self.exclusive = request.sharing is Sharing.EXCLUSIVE
        drained = state.capacity.drained_gpus
        mode = request.compute_mode
        self.by_id = state.by_id
        self.orphans = state.orphans
        self.parts: list[Part] = [
            p
            for p in state.parts
            if p.healthy
            and p.gpu not in drained
            and (mode is None or p.mode is mode)
            and instance_budget(p.size) >= self.need
        ]
        self.ids = {p.id for p in self.parts}
        self.gpus = {p.gpu for p in self.parts}

    def touches(self, allocation: Allocation) -> bool:
        """Could evicting it help: it holds a candidate partition or blocks its GPU."""
        for pid in allocation.partition_ids:
            if pid in self.ids:
                return True
            if pid not in self.by_id and gpu_of_partition_id(pid) in self.gpus | {None}:
                return True
        return False

    def fits(self, removed: Sequence[Allocation]) -> bool:
        held: Counter[str] = Counter()
        instances: Counter[str] = Counter()
        exclusive: Counter[str] = Counter()
        orphans = Counter(self.orphans)
        for allocation in removed:
            for pid in allocation.partition_ids:
                if pid not in self.by_id:
                    orphans[gpu_of_partition_id(pid)] -= 1
                    continue
                instances[pid] += 1
                held[pid] += instance_footprint(allocation.memory_bytes)
                if allocation.sharing is Sharing.EXCLUSIVE:
                    exclusive[pid] += 1
        if orphans[None] > 0:
            return False
        fitting: Counter[ComputeMode] = Counter()
        for p in self.parts:
            if orphans[p.gpu] > 0:
                continue
            if self.exclusive:
                ok = p.instances == instances[p.id]
            else:
                free = instance_budget(p.size, p.held_bytes - held[p.id])
                ok = p.exclusive == exclusive[p.id] and free >= self.need
            if ok:
                fitting[p.mode] += 1
                if fitting[p.mode] >= self.k:
                    return True
        return False
