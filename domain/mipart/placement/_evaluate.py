"""The placement engine: which node and which partitions a vLLM pod gets (docs/placement.md).

Pure: inventories, allocations and a request in; feasible nodes with their partition choice
and a 0..10 score, and a reason for every other node, out. The rules, in one place:

- a partition is usable if its node is ready, its GPU not drained, it is healthy, and its
  compute mode is the one asked for (if any);
- an exclusive pod needs a partition without any allocation, at least as large as its limit;
- a shared pod needs ``limit + INSTANCE_OVERHEAD_BYTES`` within the partition's memory minus
  Σ(limit + reserve) of the shared pods already there, and never a partition held exclusively;
- a tensor-parallel pod needs that many distinct partitions of one compute mode on one node.

This module is the public surface; the work is done in cluster_view (state, caches),
node_state (per-node summaries), choice (topology, policy, score), reasons and preemption.
"""

from __future__ import annotations

from collections.abc import Iterable

from mipart.geometry import Rounding, format_bytes
from mipart.placement._cluster_view import ClusterView
from mipart.placement._preemption import victims_for
from mipart.placement._reasons import summarize_rejections
from mipart.placement._types import (
    INSTANCE_OVERHEAD_BYTES,
    QOS_RANK,
    TENSOR_PARALLEL_DEGREES,
    Allocation,
    Evaluation,
    Feasibility,
    InvalidRequest,
    NodeCapacity,
    PartitionRequest,
    PartitionState,
    PartitionUsage,
    Placement,
    PlacementConflict,
    Policy,
    QosClass,
    Sharing,
    allocation_for,
    policy_for,
)

__all__ = [
    "INSTANCE_OVERHEAD_BYTES",
    "QOS_RANK",
    "TENSOR_PARALLEL_DEGREES",
    "Allocation",
    "ClusterView",
    "Evaluation",
    "Feasibility",
    "InvalidRequest",
    "NodeCapacity",
    "PartitionRequest",
    "PartitionState",
    "PartitionUsage",
    "Placement",
    "PlacementConflict",
    "Policy",
    "QosClass",
    "Rounding",
    "Sharing",
    "allocation_for",
    "evaluate",
    "format_bytes",
    "policy_for",
    "summarize_rejections",
    "victims_for",
]


def evaluate(
    request: PartitionRequest,
    nodes: Iterable[NodeCapacity],
    allocations: Iterable[Allocation],
    *,
    policy: Policy | None = None,
) -> Evaluation:
    """Evaluate ``request`` against every node, from scratch.

    A convenience for one-off questions (the controller's "could this pod fit anywhere", tests).
    A caller that asks per pod, like the extender, keeps a ClusterView instead.
    """
    nodes = tuple(nodes)
    view = ClusterView(nodes, allocations)
    return view.evaluate(request, [n.name for n in nodes], policy=policy)
