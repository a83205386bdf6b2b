"""The exact optimum of the packing benchmark: an integer program solved by HiGHS.

Choose a compute mode for every GPU and which replicas go on which partitions, to maximise the
memory placed (Σ limit x partitions over placed replicas), under the placement engine's rules:
an exclusive replica of ``tp`` partitions needs ``tp`` idle partitions of one compute mode on
one node, each at least its limit (docs/placement.md); a GPU has one compute mode.

For modes m (``p_m`` partitions per GPU) and classes c of identical replicas (limit ``l_c``,
``tp_c`` partitions, ``d_c`` waiting):

    G[m]   in Z+   GPUs in mode m, cluster-wide          Σ_m G[m] <= nodes x GPUs per node
    x[c,m] in Z+   replicas of c on mode-m partitions   Σ_c tp_c x[c,m] <= p_m G[m]
                   (only where the engine says c fits a mode-m partition)
                                                        Σ_m x[c,m] <= d_c
    maximise Σ l_c tp_c x[c,m]

With QoS classes the objective is lexicographic, as the queue serves: the most memory of
latency replicas, then, holding that, the most of standard ones, then of batch ones (one
solve per class, each fixing the last one's figure as a constraint).

Counting cluster-wide loses nothing, because every size involved is a power of two: in a mode,
replicas smaller than a GPU fill GPUs exactly (each tp divides p_m), larger ones take tp/p_m
whole GPUs, and groups of 1, 2, 4 or 8 GPUs fill nodes of 8 exactly, largest first. So any
feasible count has a concrete assignment; ``solve`` builds it that way, and ``check`` has the
engine's ClusterView.reserve() accept every allocation. Memory modes are left out without
loss: every compute mode runs under NPS1 and partition sizes do not depend on the memory mode
(mipart.geometry), so NPS2 or NPS4 can never place more.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import highspy

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout, gpu_of_partition_id, is_compatible
from mipart.geometry._partitions import partition_id
from mipart.placement import (
    Allocation,
    ClusterView,
    NodeCapacity,
    PartitionRequest,
    QosClass,
    Sharing,
    evaluate,
)

GIB = 2**30
Var = highspy.highs.highs_var
# A GPU's replicas: (trace position, request, partition indices on the GPU).
Tenants = list[tuple[int, PartitionRequest, list[int]]]


@dataclass(frozen=True, slots=True)
class Optimum:
    layouts: dict[str, NodeLayout]
    allocations: tuple[Allocation, ...]  # pod = the replica's position in the trace
    status: str
    objective_bytes: float
    bound_bytes: float
    gap: float
    seconds: float


def solve(
    replicas: Sequence[PartitionRequest], nodes: Sequence[str], gpus: int, *, time_limit: float
) -> Optimum:
    if any(r.sharing is not Sharing.EXCLUSIVE for r in replicas):
        raise ValueError("the model covers exclusive replicas only (see the module docstring)")
    classes: dict[PartitionRequest, list[int]] = defaultdict(list)
    for position, request in enumerate(replicas):
        classes[request].append(position)
    fits = sorted(((c, m) for c in classes for m in ComputeMode if _fits(c, m, gpus)), key=_order)

    h = highspy.Highs()  # type: ignore[no-untyped-call]  # its __init__ lacks "-> None"
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", time_limit)
    h.setOptionValue("mip_rel_gap", 0.0)
    integer = highspy.HighsVarType.kInteger
    g = {m: h.addVariable(0, len(nodes) * gpus, type=integer) for m in ComputeMode}
    x = {(c, m): h.addVariable(0, len(classes[c]), type=integer) for c, m in fits}
    h.addConstr(sum(g.values()) <= len(nodes) * gpus)
    for m in ComputeMode:
        used = [c.partitions * x[c, mode] for c, mode in fits if mode is m]
        if used:
            h.addConstr(sum(used) <= m.partition_count * g[m])
    for c, positions in classes.items():
        placed = [x[c, m] for m in ComputeMode if (c, m) in x]
        if placed:
            h.addConstr(sum(placed) <= len(positions))
    started = time.perf_counter()
    _lexicographic(h, [(c, v) for (c, _), v in x.items()])
    seconds = time.perf_counter() - started

    info = h.getInfo()
    chosen: dict[ComputeMode, list[tuple[int, PartitionRequest]]] = defaultdict(list)
    for (c, m), v in x.items():
        chosen[m].extend((classes[c].pop(0), c) for _ in range(round(h.val(v))))
    layouts, allocations = _assign(nodes, gpus, chosen)
    return Optimum(
        layouts=layouts,
        allocations=allocations,
        status=h.modelStatusToString(h.getModelStatus()),
        objective_bytes=info.objective_function_value * GIB,
        bound_bytes=info.mip_dual_bound * GIB,
        gap=info.mip_gap,
        seconds=seconds,
    )


def bound_keeping(
    waiting: Sequence[PartitionRequest],
    kept: Sequence[Allocation],
    layouts: dict[str, NodeLayout],
    *,
    time_limit: float,
    aged: Sequence[bool] | None = None,
) -> dict[QosClass, int]:
    """The most memory, by QoS class, that placing ``waiting`` can add while the ``kept``
    allocations stay where they are (a scheduler that moves no running pod), solved
    lexicographically like ``solve``. Per node: a GPU holding a kept pod keeps its mode and
    offers its free partitions; an idle GPU takes any mode its node's memory mode allows, or
    any mode at all when the whole node is idle (a reload). Multi-partition replicas need
    their partitions on one node. An upper bound: it does not ask how a node's free
    partitions split among its GPUs, nor how long a change takes.

    With ``aged`` (per waiting pod, in queue order: oldest first), the placement must also
    keep the aging promise: no pod is placed while an older aged pod of its class, natural
    compute mode and partition count waits (the overtaking the benchmark counts)."""
    classes: dict[PartitionRequest, int] = defaultdict(int)
    for request in waiting:
        classes[request] += 1
    used: dict[tuple[str, int], int] = defaultdict(int)
    for allocation in kept:
        for pid in allocation.partition_ids:
            used[allocation.node, _gpu_index(pid)] += 1
    gpus = len(next(iter(layouts.values())).compute)
    # Whether a request fits a mode does not depend on the node: ask the engine once.
    fitting = {c: [m for m in ComputeMode if _fits(c, m, gpus)] for c in classes}
    h = highspy.Highs()  # type: ignore[no-untyped-call]  # its __init__ lacks "-> None"
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", time_limit)
    h.setOptionValue("mip_rel_gap", 0.0)
    integer = highspy.HighsVarType.kInteger
    terms: list[tuple[PartitionRequest, Var]] = []
    per_class: dict[PartitionRequest, list[Var]] = defaultdict(list)
    for node, layout in layouts.items():
        busy = {gpu for (n, gpu) in used if n == node}
        idle = len(layout.compute) - len(busy)
        allowed = [m for m in ComputeMode if not busy or is_compatible(m, layout.memory)]
        modes = {m: h.addVariable(0, idle, type=integer) for m in allowed}
        if modes:
            h.addConstr(highspy.Highs.qsum(modes.values()) <= idle)
        for m in ComputeMode:
            free = sum(m.partition_count - used[node, g] for g in busy if layout.compute[g] is m)
            capacity = m.partition_count * modes[m] + free if m in modes else free
            if isinstance(capacity, int) and capacity == 0:
                continue
            load = []
            for c, count in classes.items():
                if m in fitting[c]:
                    v = h.addVariable(0, count, type=integer)
                    load.append(c.partitions * v)
                    terms.append((c, v))
                    per_class[c].append(v)
            if load:
                h.addConstr(highspy.Highs.qsum(load) <= capacity)
    if aged is None:
        for c, placed in per_class.items():
            h.addConstr(highspy.Highs.qsum(placed) <= classes[c])
    else:
        _keep_aging(h, waiting, aged, per_class, fitting)
    values = _lexicographic(h, terms)
    return {qos: round(values[qos] * GIB) for qos in QosClass}


def _keep_aging(
    h: highspy.Highs,
    waiting: Sequence[PartitionRequest],
    aged: Sequence[bool],
    per_class: dict[PartitionRequest, list[Var]],
    fitting: dict[PartitionRequest, list[ComputeMode]],
) -> None:
    """One 0/1 variable per waiting pod (placed or not), tied to the counts per request, and
    in each group of pods that may overtake one another (QoS class, natural mode, partition
    count): a pod is placed only if the last aged pod before it is."""
    binary = highspy.HighsVarType.kInteger
    placed = [h.addVariable(0, 1, type=binary) for _ in waiting]
    by_request: dict[PartitionRequest, list[Var]] = defaultdict(list)
    last_aged: dict[tuple[QosClass, ComputeMode | None, int], Var] = {}
    for request, is_aged, y in zip(waiting, aged, placed, strict=True):
        by_request[request].append(y)
        # Its natural mode: the one with the smallest partitions that hold it.
        natural = max(fitting[request], key=lambda m: m.partition_count, default=None)
        group = (request.qos, natural, request.partitions)
        before = last_aged.get(group)
        if before is not None:
            h.addConstr(y <= before)
        if is_aged:
            last_aged[group] = y
    for request, ys in by_request.items():
        counts = per_class.get(request, [])
        if counts:
            h.addConstr(highspy.Highs.qsum(counts) == highspy.Highs.qsum(ys))
        else:  # fits nowhere: never placed
            h.addConstr(highspy.Highs.qsum(ys) <= 0)


def _lexicographic(
    h: highspy.Highs, terms: Sequence[tuple[PartitionRequest, Var]]
) -> dict[QosClass, float]:
    """Maximise the memory of ``terms`` (a request and its count variable) class by class,
    latency first, each class's figure held while the next is solved; GiB per class."""
    got: dict[QosClass, float] = {}
    for qos in QosClass:
        mine = [(c, v) for c, v in terms if c.qos is qos]
        got[qos] = 0.0
        if mine:  # some replica of this class can be placed
            placed = _memory(mine)
            h.maximize(placed)
            info = h.getInfo()
            # Stopped by the time limit, the solver's bound is the figure: still an upper one.
            optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
            got[qos] = info.objective_function_value if optimal else info.mip_dual_bound
            # Hold what this class got, less 1 MiB: a tighter margin is within the solver's
            # tolerances and can make the next solve infeasible.
            h.addConstr(placed >= info.objective_function_value - 1e-3)
    h.maximize(_memory(terms))
    return got


def _memory(terms: Sequence[tuple[PartitionRequest, Var]]) -> highspy.highs.highs_linear_expression:
    """The GiB that ``terms`` (a request and its count) place."""
    return highspy.Highs.qsum(c.memory_bytes * c.partitions / GIB * v for c, v in terms)


def check(optimum: Optimum) -> ClusterView:
    """The optimum's allocations reserved one by one through the placement engine, which
    refuses any that breaks its rules: the solution is one the extender could have made."""
    view = ClusterView(NodeCapacity.from_layout(n, lay) for n, lay in optimum.layouts.items())
    for allocation in optimum.allocations:
        view.reserve(allocation)
    return view


def _fits(request: PartitionRequest, mode: ComputeMode, gpus: int) -> bool:
    """Whether the engine would put ``request`` on mode-``mode`` partitions of an empty node."""
    if request.compute_mode not in (None, mode):
        return False
    empty = NodeLayout(MemoryMode.NPS1, dict.fromkeys(range(gpus), mode))
    pinned = replace(request, compute_mode=mode)
    return bool(evaluate(pinned, (NodeCapacity.from_layout("empty", empty),), ()).feasible)


def _gpu_index(partition_id: str) -> int:
    gpu = gpu_of_partition_id(partition_id)
    assert gpu is not None, partition_id
    return gpu


def _order(key: tuple[PartitionRequest, ComputeMode]) -> tuple[int, int, str]:
    request, mode = key
    return (request.memory_bytes, request.partitions, mode.value)


def _assign(
    nodes: Sequence[str], gpus: int, chosen: dict[ComputeMode, list[tuple[int, PartitionRequest]]]
) -> tuple[dict[str, NodeLayout], tuple[Allocation, ...]]:
    """Concrete GPUs and partitions for the chosen replicas, largest pieces first (exact for
    power-of-two sizes, see the module docstring)."""
    groups: list[tuple[ComputeMode, list[Tenants]]] = []  # GPUs that must share a node
    for mode, placed in chosen.items():
        per_gpu = mode.partition_count
        open_gpu: Tenants = []
        free = 0
        for position, request in sorted(placed, key=lambda p: -p[1].partitions):
            if request.partitions >= per_gpu:
                # Its first GPU names it; the others of the group are all its own.
                rest: list[Tenants] = [[] for _ in range(request.partitions // per_gpu - 1)]
                groups.append((mode, [[(position, request, list(range(per_gpu)))], *rest]))
                continue
            if free < request.partitions:
                open_gpu, free = [], per_gpu
                groups.append((mode, [open_gpu]))
            start = per_gpu - free
            open_gpu.append((position, request, list(range(start, start + request.partitions))))
            free -= request.partitions
    layouts = {n: NodeLayout(MemoryMode.NPS1, {}) for n in nodes}
    allocations: list[Allocation] = []
    slots = dict.fromkeys(nodes, 0)
    for mode, members in sorted(groups, key=lambda group: -len(group[1])):
        node = next(n for n in nodes if slots[n] + len(members) <= gpus)
        first = slots[node]
        slots[node] += len(members)
        for offset, tenants in enumerate(members):
            layouts[node] = layouts[node].with_compute(first + offset, mode)
            for position, request, indices in tenants:
                # A replica spanning GPUs is recorded on the first GPU of its group.
                on = range(first, first + max(1, request.partitions // mode.partition_count))
                ids = tuple(partition_id(gpu, mode, i) for gpu in on for i in indices)
                pod = str(position)
                allocations.append(
                    Allocation(pod, pod, node, ids, request.memory_bytes, Sharing.EXCLUSIVE)
                )
    for node in nodes:  # GPUs left over: any mode would do
        for gpu in range(slots[node], gpus):
            layouts[node] = layouts[node].with_compute(gpu, ComputeMode.SPX)
    return layouts, tuple(allocations)
