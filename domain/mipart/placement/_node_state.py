"""One node as the placement engine keeps it: partitions, their allocations, and summaries.

The summaries (per compute mode: the eight largest limits a new instance could get on a
partition not held exclusively, and on an idle one, by instance_budget; from them the largest
limit k partitions of one mode can give) answer "can this request fit here" in O(1) and "why
not" in O(compute modes) without looking at a partition; they are rebuilt, in O(partitions),
only when the node or one of its allocations changes. Internal to the placement engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from mipart.geometry import ComputeMode, Rounding, format_bytes, gpu_of_partition_id
from mipart.placement import _reasons as reasons
from mipart.placement._parts import (
    Ladder,
    LadderKey,
    ModeSummary,
    Part,
    limits_of,
    request_limit_key,
    summarize,
)
from mipart.placement._types import (
    Allocation,
    NodeCapacity,
    PartitionRequest,
    PartitionUsage,
    Sharing,
    instance_budget,
    instance_footprint,
)


class NodeState:
    """Partitions of one node with its allocations applied, and their summaries."""

    def __init__(self, capacity: NodeCapacity, allocations: Iterable[Allocation] = ()) -> None:
        self.capacity = capacity
        self.name = capacity.name
        self.parts = tuple(Part(p.geometry, p.healthy) for p in capacity.partitions)
        self.by_id = {p.id: p for p in self.parts}
        self.allocations: dict[str, Allocation] = {}
        # Allocations on partitions the node does not report block their GPU (None: unknown GPU,
        # so the whole node): the engine cannot know what is free there.
        self.orphans: Counter[int | None] = Counter()
        # Partitions in each policy's order, filled by choice; cleared whenever anything changes.
        self.ladders: dict[LadderKey, Ladder] = {}
        for allocation in allocations:
            self._apply(allocation, +1)
        self.refresh()

    # --- allocations -------------------------------------------------------------------

    def add(self, allocation: Allocation) -> None:
        self._change(allocation, +1)

    def remove(self, pod_uid: str) -> None:
        allocation = self.allocations.get(pod_uid)
        if allocation is not None:
            self._change(allocation, -1)

    def _change(self, allocation: Allocation, sign: int) -> None:
        """Apply one allocation and bring the summaries up to date: only the modes it touches,
        unless it names partitions the node does not report (those block GPUs: a full
        refresh). Every bind and every finished pod comes here."""
        orphans = sum(self.orphans.values())
        touched = self._apply(allocation, sign)
        if sum(self.orphans.values()) != orphans:
            self.refresh()
            return
        for part, before in touched:
            change = part.used_bytes - before
            self.gpu_used[part.gpu] += change
            if part.usable:
                self.used_bytes += change
        for mode in {part.mode for part, _ in touched if part.usable}:
            self.modes[mode] = summarize(self.mode_parts[mode])
        if self.block_reason is None:
            self.limits = limits_of(self.modes)
        self.ladders.clear()

    def _apply(self, allocation: Allocation, sign: int) -> list[tuple[Part, int]]:
        """Count (+1) or uncount (-1) an allocation on its partitions; returns each partition
        it holds with the memory it used before."""
        if sign > 0:
            self.allocations[allocation.pod_uid] = allocation
        else:
            del self.allocations[allocation.pod_uid]
        exclusive = allocation.sharing is Sharing.EXCLUSIVE
        touched = []
        for pid in allocation.partition_ids:
            part = self.by_id.get(pid)
            if part is None:
                self.orphans[gpu_of_partition_id(pid)] += sign
                continue
            touched.append((part, part.used_bytes))
            part.instances += sign
            part.held_bytes += sign * instance_footprint(allocation.memory_bytes)
            if exclusive:
                part.exclusive += sign
            else:
                part.shared_limits += sign * allocation.memory_bytes
        return touched

    # --- summaries -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Everything from the partitions: on creation, and when blocked GPUs change."""
        drained = self.capacity.drained_gpus
        blocked = {gpu for gpu, n in self.orphans.items() if n > 0}
        self.mode_parts: dict[ComputeMode, list[Part]] = {}
        self.gpu_used: dict[int, int] = {}
        self.used_bytes = self.total_bytes = 0
        for part in self.parts:
            part.usable = part.healthy and part.gpu not in drained and part.gpu not in blocked
            self.gpu_used[part.gpu] = self.gpu_used.get(part.gpu, 0) + part.used_bytes
            if part.usable:
                self.mode_parts.setdefault(part.mode, []).append(part)
                self.used_bytes += part.used_bytes
                self.total_bytes += part.size
        self.modes = {mode: summarize(parts) for mode, parts in self.mode_parts.items()}
        self.block_reason = self._block_reason(blocked)
        self.limits = limits_of(self.modes) if self.block_reason is None else {}
        self.ladders.clear()

    def _block_reason(self, blocked: set[int | None]) -> str | None:
        if not self.capacity.ready:
            return reasons.NOT_READY
        if not self.parts:
            return reasons.NO_PARTITIONS
        if None in blocked:
            return reasons.UNKNOWN_PARTITIONS
        if self.modes:
            return None
        if {p.gpu for p in self.parts} <= self.capacity.drained_gpus:
            return reasons.ALL_DRAINED
        if any(p.healthy and p.gpu not in self.capacity.drained_gpus for p in self.parts):
            return reasons.UNKNOWN_PARTITIONS
        return reasons.NONE_HEALTHY

    # --- fit -----------------------------------------------------------------------------

    def check(self, request: PartitionRequest) -> str | None:
        """Why ``request`` cannot fit here, or None if it can. O(1)."""
        limit = self.limits.get(request_limit_key(request))
        if limit is not None and request.memory_bytes <= limit:
            return None
        return self.reason(request)

    def reason(self, request: PartitionRequest) -> str:
        """Why ``request`` does not fit (call only when it does not). O(compute modes)."""
        if self.block_reason is not None:
            return self.block_reason
        mode = request.compute_mode
        if mode is None:
            considered = tuple(self.modes.items())
        elif mode in self.modes:
            considered = ((mode, self.modes[mode]),)
        else:
            return reasons.no_usable_mode(mode)
        return self._memory_reason(request, considered)

    def _memory_reason(
        self, request: PartitionRequest, considered: tuple[tuple[ComputeMode, ModeSummary], ...]
    ) -> str:
        need, k = request.memory_bytes, request.partitions
        exclusive = request.sharing is Sharing.EXCLUSIVE
        largest, largest_mode = max((s.size, m) for m, s in considered)
        usable = instance_budget(largest)
        if need > usable:
            return reasons.partitions_too_small(
                largest=largest,
                largest_mode=largest_mode,
                only_mode=len(self.modes) == 1,
                requested_mode=request.compute_mode is not None,
                usable=usable if need <= largest else None,
            )
        tops = [s.idle_top if exclusive else s.free_top for _, s in considered]
        if k > 1:
            fits = [sum(1 for free in top if free >= need) for top in tops]
            return reasons.too_few_partitions(
                count=k,
                need=need,
                fit=max(fits),
                exclusive=exclusive,
                mode=request.compute_mode,
                mixed=sum(fits) >= k,
            )
        best = max((top[0] for top in tops if top), default=None)
        if exclusive:
            return reasons.no_idle_partition(
                need=need, largest_idle=best, mode=request.compute_mode
            )
        return reasons.no_free_partition(
            need=need, largest_free=best or 0, mode=request.compute_mode
        )

    def conflict(self, allocation: Allocation) -> str | None:
        """Why recording ``allocation`` would break the rules, or None. Used by reserve()."""
        if self.block_reason is not None:
            return self.block_reason
        parts = []
        for pid in allocation.partition_ids:
            part = self.by_id.get(pid)
            if part is None:
                return f"partition {pid} is not reported by the node"
            if not part.usable:
                return f"partition {pid} is not usable (unhealthy, or its GPU is drained)"
            parts.append(part)
        if len({p.mode for p in parts}) > 1:
            return "tensor-parallel partitions must share one compute mode"
        exclusive = allocation.sharing is Sharing.EXCLUSIVE
        for part in parts:
            if exclusive and part.instances:
                return f"partition {part.id} is already allocated"
            if part.exclusive:
                return f"partition {part.id} is held exclusively"
            room = part.room
            if room < allocation.memory_bytes:
                asked = format_bytes(allocation.memory_bytes, Rounding.UP)
                left = format_bytes(max(room, 0), Rounding.DOWN)
                where = "usable on an idle partition" if exclusive else "free for a shared pod"
                return f"partition {part.id}: {asked} asked, {left} {where}"
        return None

    def usage(self) -> tuple[PartitionUsage, ...]:
        return tuple(
            PartitionUsage(
                partition_id=p.id,
                gpu_index=p.gpu,
                compute_mode=p.mode,
                memory_bytes=p.size,
                usable=p.usable,
                instances=p.instances,
                exclusive=p.exclusive > 0,
                shared_bytes=p.shared_limits,
                free_bytes=max(p.room, 0) if p.usable else 0,
            )
            for p in self.parts
        )
