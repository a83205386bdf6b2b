"""The cluster as the placement engine sees it, kept up to date one change at a time.

Built once from the nodes' capacities and the allocations of unfinished pods, then told about
each change (``set_node``, ``remove_node``, ``add_allocation``, ``remove_allocation``,
``reserve``), each costing O(partitions of that node). ``filter`` costs O(1) per node: every
node's summary says the largest limit k partitions of one mode can give, and the view keeps
those transposed (limit key -> node -> limit); it keeps filter's whole answer per request
shape too, and re-judges only the nodes changed since (standing.py). ``evaluate`` costs
O(1) per node for a request shape it has answered since the node last changed, and otherwise
O(log partitions) (one partition) or O(partitions) (tensor parallel). See docs/placement.md.

Not thread-safe: every method, the questions included (they fill caches), must run under one
lock held by the caller. Results (Placement, Evaluation, Feasibility) are immutable snapshots
and may be used after the lock is released.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from mipart.placement import _reasons as reasons
from mipart.placement._choice import choose
from mipart.placement._node_state import NodeState
from mipart.placement._parts import LimitKey, RequestKey, request_limit_key
from mipart.placement._standing import StandingAnswer, V
from mipart.placement._types import (
    Allocation,
    Evaluation,
    Feasibility,
    NodeCapacity,
    PartitionRequest,
    PartitionUsage,
    Placement,
    PlacementConflict,
    Policy,
    policy_for,
)

# Answers are kept for this many request shapes, the least recently asked going first: pods
# of one Deployment share a shape, so a handful covers a scheduling burst, and a shape's
# first answer at 5000 nodes costs ~10 ms (every node judged), each ~0.3 MB to keep.
_CACHE_SHAPES = 64


class ClusterView:
    """Free capacity per partition, derived from inventories minus allocations."""

    def __init__(
        self, nodes: Iterable[NodeCapacity] = (), allocations: Iterable[Allocation] = ()
    ) -> None:
        self._nodes: dict[str, NodeState] = {}
        self._allocations: dict[str, Allocation] = {}
        # Allocations by node, kept for nodes the view does not know (yet): pods are listed
        # before GPUNodes on start-up, and a node that comes back must find its pods.
        self._by_node: dict[str, dict[str, Allocation]] = {}
        # The nodes' fit limits, transposed: limit key -> node -> the largest limit that fits.
        # The filter reads one small-valued, hot dict per request instead of one per node.
        self._limits: dict[LimitKey, dict[str, int]] = {}
        # Answers already worked out, per question, for every node (standing.py): filter's
        # by request shape (fit does not depend on the policy), evaluate's by shape and
        # policy. A changed node is marked stale in each; bounded by _CACHE_SHAPES each.
        self._fit_answers: dict[RequestKey, StandingAnswer[bool]] = {}
        self._placement_answers: dict[RequestKey, StandingAnswer[Placement]] = {}
        # prioritize's, by shape and policy: plain numbers, so the garbage collector never
        # walks them (cached Placements for 5000 nodes made its full passes ~100 ms long).
        self._score_answers: dict[RequestKey, StandingAnswer[int]] = {}
        for allocation in allocations:
            self._record(allocation)
        for node in nodes:
            self.set_node(node)

    # --- changes -------------------------------------------------------------------------

    def set_node(self, node: NodeCapacity) -> None:
        """Add or replace a node (new inventory, health, drains, readiness). O(its partitions)."""
        old = self._nodes.get(node.name)
        state = NodeState(node, self._by_node.get(node.name, {}).values())
        self._nodes[node.name] = state
        self._reindex(node.name, old.limits if old else {}, state.limits)

    def remove_node(self, name: str) -> bool:
        """Forget a node; its allocations stay recorded until their pods go."""
        state = self._nodes.pop(name, None)
        if state is None:
            return False
        self._reindex(name, state.limits, {})
        return True

    def add_allocation(self, allocation: Allocation) -> None:
        """Record an allocation that exists (a bound pod's annotation), whether or not it fits.

        Facts are never refused: an over-committed partition simply has no free memory, so the
        engine places nothing more there. Use reserve() for a new allocation. Replaces an
        earlier allocation of the same pod.
        """
        if self._allocations.get(allocation.pod_uid) == allocation:
            return  # a bound pod's status update: nothing to redo
        self.remove_allocation(allocation.pod_uid)
        self._record(allocation)
        state = self._nodes.get(allocation.node)
        if state is not None:
            before = state.limits
            state.add(allocation)
            self._reindex(state.name, before, state.limits)

    def remove_allocation(self, pod_uid: str) -> Allocation | None:
        """Forget a pod's allocation (the pod finished or was deleted)."""
        allocation = self._allocations.pop(pod_uid, None)
        if allocation is None:
            return None
        on_node = self._by_node[allocation.node]
        del on_node[pod_uid]
        if not on_node:
            del self._by_node[allocation.node]
        state = self._nodes.get(allocation.node)
        if state is not None:
            before = state.limits
            state.remove(pod_uid)
            self._reindex(state.name, before, state.limits)
        return allocation

    def reserve(self, allocation: Allocation) -> None:
        """Record a new allocation if the rules allow it; raise PlacementConflict otherwise.

        The guard against over-commit and double exclusivity: bind calls this, under the same
        lock as the evaluation that chose the partitions. Reserving the same allocation twice
        is a no-op (a retried bind); a different allocation for the same pod is a conflict.
        """
        problem = self.conflict(allocation)
        if problem is not None:
            if allocation.pod_uid in self._allocations:
                raise PlacementConflict(f"{allocation.pod} {problem}")
            raise PlacementConflict(f"{allocation.pod} on {allocation.node}: {problem}")
        self.add_allocation(allocation)

    def conflict(self, allocation: Allocation) -> str | None:
        """Why reserve() would refuse ``allocation`` (the pod's name left out), or None: the
        same rules, and nothing recorded. The extender's filter asks it of a pod that the
        re-partition planner holds to given partitions."""
        existing = self._allocations.get(allocation.pod_uid)
        if existing == allocation:
            return None
        if existing is not None:
            return f"already holds an allocation on {existing.node}"
        state = self._nodes.get(allocation.node)
        return reasons.UNKNOWN_NODE if state is None else state.conflict(allocation)

    def _reindex(self, name: str, before: dict[LimitKey, int], after: dict[LimitKey, int]) -> None:
        """Called after every change to a node: its limits and cached answers are stale."""
        for cache in (self._fit_answers, self._placement_answers, self._score_answers):
            for answers in cache.values():
                answers.mark_stale(name)
        for key in before.keys() - after.keys():
            del self._limits[key][name]
        for key, limit in after.items():
            self._limits.setdefault(key, {})[name] = limit

    def _record(self, allocation: Allocation) -> None:
        self._allocations[allocation.pod_uid] = allocation
        self._by_node.setdefault(allocation.node, {})[allocation.pod_uid] = allocation

    # --- questions -----------------------------------------------------------------------

    def filter(
        self, request: PartitionRequest, node_names: Collection[str] | None = None
    ) -> Feasibility:
        """Which nodes can take ``request``, with a reason for each that cannot. O(1) per node
        changed since the same shape was last asked, the rest in C (standing.py)."""
        need, nodes = request.memory_bytes, self._nodes
        # Nothing changes the view during one answer: the limits are read once.
        limits = self._limits.get(request_limit_key(request), {})

        def judge(name: str) -> bool | str:
            limit = limits.get(name)
            return True if limit is not None and need <= limit else nodes[name].reason(request)

        answers = _standing(self._fit_answers, _key(request, None), nodes)
        answer = answers.answer(judge, nodes, node_names)
        return Feasibility(tuple(answer.fits), answer.rejected, answer.unresolvable)

    def evaluate(
        self,
        request: PartitionRequest,
        node_names: Collection[str] | None = None,
        *,
        policy: Policy | None = None,
    ) -> Evaluation:
        """Placement and score on every node that fits, a reason for every node that does not.
        O(partitions) per node changed since the same question was last asked."""
        policy = policy or policy_for(request.qos)
        nodes = self._nodes

        def judge(name: str) -> Placement | str:
            return choose(nodes[name], request, policy)

        answers = _standing(self._placement_answers, _key(request, policy), nodes)
        answer = answers.answer(judge, nodes, node_names)
        return Evaluation(answer.fits, {**answer.rejected, **answer.unresolvable})

    def scores(
        self,
        request: PartitionRequest,
        node_names: Collection[str] | None = None,
        *,
        policy: Policy | None = None,
    ) -> dict[str, int]:
        """The score (0..10) of each node asked that can take ``request``: evaluate's answer
        without the placements, for the extender's prioritize."""
        policy = policy or policy_for(request.qos)
        nodes = self._nodes

        def judge(name: str) -> int | str:
            outcome = choose(nodes[name], request, policy)
            return outcome if isinstance(outcome, str) else outcome.score

        answers = _standing(self._score_answers, _key(request, policy), nodes)
        return answers.answer(judge, nodes, node_names).fits

    def place(
        self, request: PartitionRequest, node_name: str, *, policy: Policy | None = None
    ) -> Placement:
        """The placement on one node (bind), or PlacementConflict with the reason."""
        evaluation = self.evaluate(request, (node_name,), policy=policy)
        if node_name in evaluation.feasible:
            return evaluation.feasible[node_name]
        raise PlacementConflict(evaluation.rejected[node_name])

    def usage(self, node_name: str) -> tuple[PartitionUsage, ...]:
        """Per-partition accounting of one node (KeyError if unknown)."""
        return self._nodes[node_name].usage()

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(self._nodes)

    def capacity(self, node_name: str) -> NodeCapacity | None:
        """The capacity last given for a node (what victims_for needs), or None."""
        state = self._nodes.get(node_name)
        return None if state is None else state.capacity

    def allocations(self, node_name: str | None = None) -> tuple[Allocation, ...]:
        """Every recorded allocation, or those on one node (known to the view or not)."""
        if node_name is None:
            return tuple(self._allocations.values())
        return tuple(self._by_node.get(node_name, {}).values())

    def allocation(self, pod_uid: str) -> Allocation | None:
        return self._allocations.get(pod_uid)


def _standing(
    cache: dict[RequestKey, StandingAnswer[V]], key: RequestKey, nodes: Iterable[str]
) -> StandingAnswer[V]:
    answers = cache.pop(key, None)
    if answers is None:
        answers = StandingAnswer(nodes)
        if len(cache) >= _CACHE_SHAPES:
            del cache[next(iter(cache))]  # dicts keep insertion order: the least recent
    cache[key] = answers  # (again) the most recent
    return answers


def _key(request: PartitionRequest, policy: Policy | None) -> RequestKey:
    mode = request.compute_mode or "any"
    return f"{request.memory_bytes}/{request.partitions}/{mode}/{request.sharing}/{policy}"
