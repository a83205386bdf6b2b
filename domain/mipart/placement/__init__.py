"""The placement engine: which node and which partitions a vLLM pod gets (docs/placement.md).

Pure: inventories, allocations and a request in; feasible nodes with their partition choice,
a 0..10 score and a reason for every other node out. The work is done in the private modules
(_cluster_view: state and caches, _node_state: per-node summaries, _choice: topology, policy
and score, _reasons, _preemption); this façade is all that other packages may import.
"""

from __future__ import annotations

from mipart.placement._cluster_view import (
    ClusterView,
)
from mipart.placement._evaluate import (
    evaluate,
)
from mipart.placement._preemption import (
    victims_for,
)
from mipart.placement._reasons import (
    summarize_rejections,
)
from mipart.placement._types import (
    GIB,
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
    instance_budget,
    instance_footprint,
    policy_for,
)

__all__ = [
    "GIB",
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
    "Sharing",
    "allocation_for",
    "evaluate",
    "instance_budget",
    "instance_footprint",
    "policy_for",
    "summarize_rejections",
    "victims_for",
]
