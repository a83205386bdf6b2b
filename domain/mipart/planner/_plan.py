"""The re-partition planner: which idle GPUs get which layout, so that waiting pods fit.

Pure: the nodes (layout, drains, health, recent changes), the allocations, the waiting pods
and a clock in; decisions with reasons, the changes held back and why, and the pods that fit
as things are, out. The controller writes the decisions into GPUNode.spec and the daemons
reconcile. The rules (docs/planner.md):

- a GPU that holds an allocation or a process is never changed; nor one that is drained,
  unhealthy, already switching, or on a node that is not ready;
- pods first go where they fit on GPUs already in use (no change needed);
- then idle GPUs are given modes greedily: each round takes the option — some idle GPUs of
  one node in one compute mode, judged by placing the waiting pods there with the placement
  engine — whose partitions the pods fill best (a change counts ``change_penalty`` against
  it), higher QoS classes first; a pod goes to its natural mode, the one with the smallest
  partitions that hold it (a 70B bf16 replica SPX, an 8B one CPX);
- only when that leaves pods waiting, a whole idle node may change memory mode, if that lets
  at least ``reload_min_gain_bytes`` of them fit;
- a change is made only for demand older than ``settle_s``, on GPUs out of their cool-down,
  and while fewer than ``max_changing`` GPUs change in the cluster; otherwise it is deferred,
  and the GPUs it needs stay as they are rather than taking pods meant for another layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from mipart.geometry import (
    ComputeMode,
    InvalidLayout,
    MemoryMode,
    MemoryStep,
    NodeLayout,
    auto_compute_mode,
    is_compatible,
    layout_steps,
)
from mipart.placement import QOS_RANK, Allocation, QosClass
from mipart.planner._defrag import defragment
from mipart.planner._ledger import Ledger
from mipart.planner._nodes import GpuPlan, NodePlan
from mipart.planner._order import packing_order
from mipart.planner._types import (
    NodeSnapshot,
    Plan,
    PlannerPolicy,
    Waiting,
)
from mipart.planner._whatif import Given, Option, WhatIf


def plan(
    nodes: Sequence[NodeSnapshot],
    allocations: Iterable[Allocation],
    demand: Sequence[Waiting],
    *,
    now: float,
    policy: PlannerPolicy | None = None,
    classes: Mapping[str, QosClass] | None = None,
) -> Plan:
    """One planning round. ``demand`` is in queue order (QoS class, then age); ``classes``
    maps the allocations' pod UIDs to their QoS class (defragmentation evicts only batch
    pods, and only those it knows are)."""
    policy = policy or PlannerPolicy()
    allocations = tuple(allocations)
    held = _gpus_with_allocations(nodes, allocations)
    given = Given(
        plans=tuple(_node_plan(n, held.get(n.name, set()), now, policy) for n in nodes),
        allocations=allocations,
        demand=demand,
        order=packing_order(demand, now, policy.aging_s),
        now=now,
        policy=policy,
    )
    chosen = _choose(given)
    if not policy.defragment:
        return chosen
    return replace(chosen, evictions=defragment(given, chosen, classes or {}))


def _choose(given: Given) -> Plan:
    plans, demand = given.plans, given.demand
    first, whatif = _round(given)
    # A node whose memory mode allows only some compute modes (NPS2: DPX; NPS4: QPX, CPX) can
    # be reloaded while it is wholly idle; once the plan puts a pod on it, it cannot. If the
    # plan used such a node only in part while pods it cannot take still wait, plan the round
    # again with those nodes last, where a reload competes with using them as they are; and
    # once more with every such node last, when demand they suit is spread over several of
    # them (setting aside one that the first plan filled can cost: an NPS2 node kept for
    # DPX pods). Keep the plan that serves most, class by class; on a tie the first of those
    # that strand the fewest GPUs.
    stranded = _stranded(plans, whatif)
    if not stranded:
        return first
    candidates = [(first, stranded)]
    restricted = [n.name for n in plans if _reloadable(n) and _restricted(n)]
    set_asides = [stranded] if restricted == stranded else [stranded, restricted]
    for set_aside in set_asides:
        again, left = _round(given, set_aside=set_aside)
        candidates.append((again, _stranded(plans, left)))
    best = max(candidates, key=lambda c: (_served(demand, c[0]), -len(c[1])))
    return best[0]


def _stranded(plans: Sequence[NodePlan], whatif: WhatIf) -> list[str]:
    """Nodes of restricted memory mode, wholly idle now, that the plan uses only in part while
    pods it cannot take still wait."""
    if not whatif.pending:
        return []
    return [
        n.name
        for n in plans
        if _reloadable(n)
        and _restricted(n)
        and any(g.free for g in whatif.nodes[n.name].gpus.values())
        and not all(g.free for g in whatif.nodes[n.name].gpus.values())
    ]


def _round(given: Given, *, set_aside: Sequence[str] = ()) -> tuple[Plan, WhatIf]:
    """The plan, with ``set_aside`` nodes planned only after the rest (reloaded, or as they
    are), and the imagined cluster it leaves."""
    policy = given.policy
    whatif = WhatIf(
        (n.copy() for n in given.plans),
        given.allocations,
        given.demand,
        policy.change_penalty,
        given.order,
    )
    ledger = Ledger(policy, given.now, given.demand, given.budget)
    # Promises on a node set aside are for changes not made yet (it is wholly idle): planned
    # again with the rest, a reload may serve more.
    whatif.set_aside = set(set_aside)
    for option in whatif.keep_promises():
        ledger.record(whatif, option)
    ledger.count(whatif.admit_on_fixed())
    for option in _fill(whatif):
        ledger.record(whatif, option)
    _reload(whatif, ledger)
    whatif.set_aside = set()
    for option in _fill(whatif):
        ledger.record(whatif, option)
    # What no reload provides for may still take partitions larger than it needs.
    whatif.strict = False
    for option in _fill(whatif):
        ledger.record(whatif, option)
    admitted = tuple(sorted(ledger.admitted, key=lambda a: a.position))
    promised = tuple(sorted(ledger.promised, key=lambda a: a.position))
    answer = Plan(tuple(ledger.decisions), tuple(ledger.deferrals), admitted, promised)
    return answer, whatif


def _by_class(demand: Sequence[Waiting], options: Iterable[Option]) -> tuple[int, ...]:
    """The memory ``options`` place, by QoS class, most urgent first."""
    placed = [0] * len(QOS_RANK)
    for option in options:
        for pos, allocation in option.placements:
            placed[QOS_RANK[demand[pos].request.qos]] += allocation.total_bytes
    return tuple(placed)


def _gains(reload: tuple[int, ...], kept: tuple[int, ...], least: int) -> bool:
    """A reload pays when it serves more, compared class by class (batch memory used as the
    node is does not outweigh standard memory a reload lets in), and what it places more, in
    the classes where it does, is at least ``least``: the reload's cost."""
    more = sum(max(0, mine - theirs) for mine, theirs in zip(reload, kept, strict=True))
    return reload > kept and more >= least


def _served(demand: Sequence[Waiting], answer: Plan) -> tuple[int, ...]:
    """The memory a plan counts pods on, by QoS class, most urgent first: what the queue
    serves first is compared first."""
    served = [0] * len(QOS_RANK)
    for counted in (*answer.admitted, *answer.promised):
        request = demand[counted.position].request
        served[QOS_RANK[request.qos]] += request.memory_bytes * request.partitions
    return tuple(served)


def _restricted(node: NodePlan) -> bool:
    """Its memory mode forbids a compute mode that another memory mode it supports allows."""
    allowed = {m for m in ComputeMode if is_compatible(m, node.memory)}
    wider = {m for mem in node.snapshot.memory_caps for m in ComputeMode if is_compatible(m, mem)}
    return bool(wider - allowed)


def _fill(whatif: WhatIf) -> list[Option]:
    """Commit the best option until no option places a waiting pod; the options in order."""
    committed: list[Option] = []
    while whatif.pending:
        options = whatif.options()
        if not options:
            break
        best = min(options, key=lambda o: _rank(whatif, o))
        whatif.commit(best)
        committed.append(best)
    return committed


def _rank(whatif: WhatIf, option: Option) -> tuple[object, ...]:
    penalty = 1.0 + whatif.penalty if option.changes else 1.0
    node = whatif.nodes[option.node]
    cooling = sum(node.gpus[g].cooling for g in option.changes)
    free = sum(g.free for g in node.gpus.values())
    # Fuller nodes first, so whole nodes stay idle for a memory-mode change.
    return (option.qos_rank, -option.fill / penalty, -option.placed_bytes, len(option.changes),
            cooling, free, option.node, option.gpus)  # fmt: skip


def _reload(whatif: WhatIf, ledger: Ledger) -> None:
    """Change the memory mode of whole idle nodes while pods still wait and it is worth it."""
    while whatif.pending:
        best: tuple[tuple[int, ...], NodePlan, MemoryMode, WhatIf, list[Option]] | None = None
        for node in whatif.nodes.values():
            if not _reloadable(node):
                continue
            # A node set aside could also be used as it is: a reload must beat that.
            kept = (
                _after_reload(whatif, node, node.memory) if node.name in whatif.set_aside else None
            )
            base = _by_class(whatif.demand, _fill(kept) if kept else [])
            for memory in sorted(node.snapshot.memory_caps - {node.memory}):
                trial = _after_reload(whatif, node, memory)
                options = _fill(trial)
                gain = _by_class(whatif.demand, options)
                enough = _gains(gain, base, ledger.policy.reload_min_gain_bytes)
                if enough and (best is None or gain > best[0]) and _one_reload(node, trial):
                    best = (gain, node, memory, trial, options)
        if best is None:
            return
        _, node, memory, trial, options = best
        whatif.adopt(trial.nodes[node.name], options)
        ledger.record_reload(whatif, whatif.nodes[node.name], options)


def _reloadable(node: NodePlan) -> bool:
    """Every GPU idle and still free in this plan, in the memory mode the node has."""
    return node.memory is node.snapshot.memory_mode and all(g.free for g in node.gpus.values())


def _one_reload(node: NodePlan, trial: WhatIf) -> bool:
    """The daemon can go there in one reload (NPS4 -> NPS2 must pass through NPS1)."""
    planned = trial.nodes[node.name]
    current = NodeLayout(node.memory, {i: g.real for i, g in node.gpus.items()})
    desired = NodeLayout(planned.memory, {i: g.mode for i, g in planned.gpus.items()})
    try:
        steps = layout_steps(current, desired, node.snapshot.memory_caps)
    except InvalidLayout:
        return False
    return sum(isinstance(step, MemoryStep) for step in steps) == 1


def _after_reload(whatif: WhatIf, node: NodePlan, memory: MemoryMode) -> WhatIf:
    """A one-node what-if of ``node`` after a reload into ``memory`` (every GPU in AUTO mode);
    in the memory mode it has, of the node as it is (every GPU in its mode)."""
    auto = auto_compute_mode(memory)
    same = memory is node.memory
    gpus = {
        i: GpuPlan(
            index=i,
            real=g.real,
            mode=g.real if same else auto,
            flexible=True,
            cooling=g.cooling and same,
        )
        for i, g in node.gpus.items()
    }
    return WhatIf(
        (NodePlan(node.snapshot, gpus, memory),), (), whatif.demand, whatif.penalty, whatif.pending
    )


def _gpus_with_allocations(
    nodes: Sequence[NodeSnapshot], allocations: Iterable[Allocation]
) -> dict[str, set[int | None]]:
    """GPUs each node's allocations sit on (None: an ID that names no GPU the node reports)."""
    gpu_of = {
        (n.name, p.geometry.id): p.geometry.gpu_index for n in nodes for p in n.capacity.partitions
    }
    held: dict[str, set[int | None]] = {}
    for allocation in allocations:
        gpus = held.setdefault(allocation.node, set())
        gpus.update(gpu_of.get((allocation.node, pid)) for pid in allocation.partition_ids)
    return held


def _node_plan(
    node: NodeSnapshot, held: set[int | None], now: float, policy: PlannerPolicy
) -> NodePlan:
    """The node at the start of the plan: GPUs that are switching already count in the mode
    they are switching to; idle ones that may change are flexible."""
    capacity = node.capacity
    sick = {p.geometry.gpu_index for p in capacity.partitions if not p.healthy}
    # An allocation on a partition the node no longer reports: we cannot tell which GPU it
    # is on, so nothing on the node may change until that pod goes.
    frozen = not capacity.ready or node.reloading is not None or None in held
    blocked = held | node.busy_gpus | capacity.drained_gpus | sick
    memory = node.reloading or node.memory_mode
    gpus = {}
    for index, mode in sorted(node.compute_modes().items()):
        changed = node.gpu_changed_at.get(index)
        coming = node.switching.get(index, auto_compute_mode(memory) if node.reloading else None)
        gpus[index] = GpuPlan(
            index=index,
            real=mode,
            mode=coming or mode,
            flexible=not frozen and coming is None and index not in blocked,
            cooling=changed is not None and now - changed < policy.cooldown_s,
            committed=coming is not None,
        )
    return NodePlan(node, gpus, memory)
