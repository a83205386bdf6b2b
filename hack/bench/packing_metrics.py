"""What the packing benchmark reports for one strategy's end state (see hack/bench/README.md).

- placed: replicas bound, and the memory they hold (Σ limit x partitions);
- stranded (fragmentation): memory neither holding a model nor available to the queue — the
  part of each allocated partition beyond its pod's limit, plus idle partitions too small for
  every replica still waiting (none when nothing waits);
- ratio: memory placed over the optimum's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mipart.geometry import ComputeMode, NodeLayout
from mipart.placement import ClusterView, PartitionRequest, QosClass


@dataclass(frozen=True, slots=True)
class Result:
    strategy: str
    placed: int
    demanded: int
    placed_bytes: int
    stranded_bytes: int
    total_bytes: int
    gpus: Counter[ComputeMode]
    note: str = ""
    by_class: dict[QosClass, int] = field(default_factory=dict)  # memory placed per class


def measure(
    strategy: str,
    view: ClusterView,
    layouts: Mapping[str, NodeLayout],
    waiting: Iterable[PartitionRequest],
    demanded: int,
    note: str = "",
    classes: Mapping[str, QosClass] | None = None,
) -> Result:
    """``classes``: each allocation's pod -> its QoS class (standard when not given)."""
    classes = classes or {}
    smallest = min((r.memory_bytes for r in waiting), default=None)
    placed = placed_bytes = stranded = total = 0
    by_class: dict[QosClass, int] = {}
    for node in view.node_names:
        capacity = view.capacity(node)
        assert capacity is not None
        sizes = {p.geometry.id: p.geometry.memory_bytes for p in capacity.partitions}
        total += sum(sizes.values())
        for allocation in view.allocations(node):
            placed += 1
            placed_bytes += allocation.total_bytes
            qos = classes.get(allocation.pod, QosClass.STANDARD)
            by_class[qos] = by_class.get(qos, 0) + allocation.total_bytes
            stranded += sum(sizes[p] - allocation.memory_bytes for p in allocation.partition_ids)
        if smallest is not None:
            stranded += sum(
                u.memory_bytes
                for u in view.usage(node)
                if not u.instances and u.memory_bytes < smallest
            )
    gpus = Counter(mode for layout in layouts.values() for mode in layout.compute.values())
    return Result(strategy, placed, demanded, placed_bytes, stranded, total, gpus, note, by_class)


def layout_summary(gpus: Counter[ComputeMode]) -> str:
    """``40 SPX, 24 DPX, 64 CPX`` (largest partitions first)."""
    return ", ".join(f"{gpus[m]} {m}" for m in ComputeMode if gpus[m])
