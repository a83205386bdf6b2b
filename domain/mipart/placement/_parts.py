"""A partition with its allocations counted, and the summaries a node keeps of them.

Internal to the placement engine (node_state, choice, preemption).
"""

from __future__ import annotations

from dataclasses import dataclass

from mipart.geometry import ComputeMode, PartitionGeometry
from mipart.placement._types import (
    TENSOR_PARALLEL_DEGREES,
    PartitionRequest,
    Sharing,
    instance_budget,
)

_TOP = max(TENSOR_PARALLEL_DEGREES)


class Part:
    """A partition and the allocations counted on it (mutable; owned by one NodeState)."""

    __slots__ = (
        "cus",
        "exclusive",
        "geometry",
        "gpu",
        "healthy",
        "held_bytes",
        "id",
        "index",
        "instances",
        "mode",
        "shared_limits",
        "size",
        "usable",
    )

    def __init__(self, geometry: PartitionGeometry, healthy: bool) -> None:
        self.geometry = geometry
        self.id = geometry.id
        self.gpu = geometry.gpu_index
        self.index = geometry.index
        self.mode = geometry.compute_mode
        self.size = geometry.memory_bytes
        self.cus = geometry.compute_units
        self.healthy = healthy
        self.usable = healthy
        self.instances = 0  # allocations of either kind
        self.exclusive = 0  # exclusive allocations (more than one only if the facts say so)
        self.held_bytes = 0  # Σ instance_footprint of the allocations, exclusive or shared
        self.shared_limits = 0  # Σ limits of the shared allocations (for usage())

    @property
    def room(self) -> int:
        """The largest limit a new instance could get here: instance_budget of what the
        allocations hold, so on an idle partition what an exclusive pod may have (negative:
        none, held exclusively, or over-committed)."""
        if self.exclusive:
            return -1
        return instance_budget(self.size, self.held_bytes)

    @property
    def used_bytes(self) -> int:
        return self.size if self.exclusive else min(self.size, self.held_bytes)


@dataclass(frozen=True, slots=True)
class ModeSummary:
    """The usable partitions of one compute mode on a node, largest first, at most eight."""

    size: int
    free_top: tuple[int, ...]  # room of partitions not held exclusively
    idle_top: tuple[int, ...]  # room of partitions with no allocation (instance_budget of size)


# Cache keys are strings, not tuples: a string caches its hash, so the per-node lookups in a
# 5000-node loop cost one dict probe each (a tuple, and an Enum inside it, hash every time).
RequestKey = str  # memory/partitions/mode/sharing/policy -> Placement or reason
LimitKey = str  # mode or "any"/sharing/partitions -> the largest limit that fits
LadderKey = str  # mode or "any"/sharing/policy -> partitions in the policy's order (choice)
# (room per partition, partitions), both in the ladder's order
Ladder = tuple[list[int], list["Part"]]


def limit_key(mode: ComputeMode | None, exclusive: bool, partitions: int) -> LimitKey:
    return f"{mode or 'any'}/{'exclusive' if exclusive else 'shared'}/{partitions}"


def request_limit_key(request: PartitionRequest) -> LimitKey:
    return limit_key(request.compute_mode, request.sharing is Sharing.EXCLUSIVE, request.partitions)


def limits_of(modes: dict[ComputeMode, ModeSummary]) -> dict[LimitKey, int]:
    """For each (mode or any, sharing, k): the largest limit k partitions of one mode can give."""
    limits: dict[LimitKey, int] = {}
    for mode, summary in modes.items():
        for exclusive, top in ((False, summary.free_top), (True, summary.idle_top)):
            for k in TENSOR_PARALLEL_DEGREES:
                if len(top) >= k:
                    limits[limit_key(mode, exclusive, k)] = top[k - 1]
                    any_key = limit_key(None, exclusive, k)
                    limits[any_key] = max(top[k - 1], limits.get(any_key, top[k - 1]))
    return limits


def summarize(parts: list[Part]) -> ModeSummary:
    free = sorted((p.room for p in parts if not p.exclusive), reverse=True)
    idle = sorted((p.room for p in parts if not p.instances), reverse=True)
    return ModeSummary(
        size=max(p.size for p in parts), free_top=tuple(free[:_TOP]), idle_top=tuple(idle[:_TOP])
    )
