"""The placement engine: which node and which partitions a vLLM pod gets (docs/placement.md).

Pure: inventories, allocations and a request in; feasible nodes with their partition choice
and a 0..10 score, and a reason for every other node, out. The rules, in one place:

- a partition is usable if its node is ready, its GPU not drained, it is healthy, and its
  compute mode is the one asked for (if any);
- every instance, exclusive or shared, holds ``instance_footprint(limit)`` (its limit plus
  the memory outside vLLM's budget), and a new one may have at most
  ``instance_budget(partition, held)``, ``held`` being what the others there hold;
- an exclusive pod needs a partition without any allocation (so ``held`` is 0), and a shared
  pod one that no exclusive pod holds;
- a tensor-parallel pod needs that many distinct partitions of one compute mode on one node.

``evaluate`` answers one question from scratch; the package's façade is the public surface,
and the work is done in _cluster_view (state, caches), _node_state (per-node summaries),
_choice (topology, policy, score), _reasons and _preemption.
"""

from __future__ import annotations

from collections.abc import Iterable

from mipart.placement._cluster_view import ClusterView
from mipart.placement._types import (
    Allocation,
    Evaluation,
    NodeCapacity,
    PartitionRequest,
    Policy,
)


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
