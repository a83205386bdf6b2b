"""Each node as the re-partition planner plans it, and a pod's natural mode (internal).

A NodePlan keeps, per GPU, the mode the hardware has, the mode the plan gives it, and whether
the plan may change it; it shows the placement engine the node as planned (NodeCapacity), with
the GPUs the plan has not decided about hidden.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout, is_compatible, partitions_of
from mipart.placement import Allocation, NodeCapacity, PartitionRequest, PartitionState, evaluate
from mipart.planner._types import NodeSnapshot

# Smallest partitions first: a pod's natural mode is the first that can hold it.
_SMALLEST_FIRST = sorted(ComputeMode, key=lambda m: -m.partition_count)


@lru_cache(maxsize=1024)
def natural_mode(request: PartitionRequest, memory: MemoryMode, gpus: int) -> ComputeMode | None:
    """The compute mode with the smallest partitions that can hold ``request`` on an empty
    node of ``gpus`` GPUs in ``memory`` mode (None: none can). Asked of the engine, so the
    instance reserve, exclusivity and tensor-parallel rules are the extender's."""
    for mode in _SMALLEST_FIRST:
        if request.compute_mode not in (None, mode) or not is_compatible(mode, memory):
            continue
        empty = NodeCapacity.from_layout(
            "empty", NodeLayout(memory, dict.fromkeys(range(gpus), mode))
        )
        if evaluate(request, (empty,), ()).feasible:
            return mode
    return None


def natural_over(
    request: PartitionRequest, memory: frozenset[MemoryMode], gpus: int
) -> ComputeMode | None:
    """The natural mode under the best of ``memory``: the one with the smallest partitions."""
    modes = [natural_mode(request, m, gpus) for m in memory]
    return max((m for m in modes if m is not None), key=lambda m: m.partition_count, default=None)


@dataclass(slots=True)
class GpuPlan:
    index: int
    real: ComputeMode  # the mode the hardware has now
    mode: ComputeMode  # the mode in the plan
    flexible: bool  # idle and changeable: the plan may give it a mode
    cooling: bool  # a change now would break its cool-down
    committed: bool = False  # the plan has given it a mode

    @property
    def free(self) -> bool:
        return self.flexible and not self.committed


class NodePlan:
    """One node's layout in the plan, and the capacity the engine sees for it."""

    def __init__(self, snapshot: NodeSnapshot, gpus: dict[int, GpuPlan], memory: MemoryMode):
        self.snapshot = snapshot
        self.name = snapshot.name
        self.memory = memory
        self.gpus = gpus
        self._reported: dict[int, list[PartitionState]] = {}
        for part in snapshot.capacity.partitions:
            self._reported.setdefault(part.geometry.gpu_index, []).append(part)

    def copy(self) -> NodePlan:
        """A fresh copy to plan on (a what-if changes its GPUs' modes)."""
        return NodePlan(self.snapshot, {i: replace(g) for i, g in self.gpus.items()}, self.memory)

    def capacity(self, overrides: dict[int, ComputeMode] | None = None) -> NodeCapacity:
        """The node as planned (free GPUs hidden), with ``overrides`` shown in their mode."""
        overrides = overrides or {}
        parts: list[PartitionState] = []
        # A switching GPU is drained by its daemon; the plan counts it in its coming mode.
        snapshot = self.snapshot
        coming = set(self.gpus) if snapshot.reloading else snapshot.switching.keys()
        hidden = set(snapshot.capacity.drained_gpus - coming)
        for index, gpu in sorted(self.gpus.items()):
            mode = overrides.get(index, gpu.mode)
            if gpu.free and index not in overrides:
                hidden.add(index)
            if mode is gpu.real and self.memory is self.snapshot.memory_mode:
                parts.extend(self._reported.get(index, ()))
            else:
                parts.extend(PartitionState(g) for g in partitions_of(index, mode, self.memory))
        return replace(
            self.snapshot.capacity,
            partitions=tuple(parts),
            memory_mode=self.memory,
            drained_gpus=frozenset(hidden),
        )

    def signature(self, allocations: Iterable[Allocation]) -> Hashable:
        """Everything an option's outcome depends on, except the node's name."""
        capacity = self.snapshot.capacity
        return (
            self.memory,
            capacity.memory_mode,
            capacity.ready,
            capacity.drained_gpus,
            tuple(sorted(self.snapshot.switching.items())),
            tuple(p.geometry.id for p in capacity.partitions if not p.healthy),
            tuple(
                (g.index, g.real, g.mode, g.flexible, g.cooling, g.committed)
                for _, g in sorted(self.gpus.items())
            ),
            tuple(sorted((a.partition_ids, a.memory_bytes, a.sharing) for a in allocations)),
        )

    def changes(self, gpu: int, mode: ComputeMode) -> bool:
        """Giving ``gpu`` ``mode`` in this plan's memory mode is a change of the hardware."""
        return mode is not self.gpus[gpu].real or self.memory is not self.snapshot.memory_mode

    def is_real(self, gpu: int) -> bool:
        """The GPU stays as the hardware has it: pods placed on it can be released now."""
        plan = self.gpus[gpu]
        return self.memory is self.snapshot.memory_mode and plan.mode is plan.real
