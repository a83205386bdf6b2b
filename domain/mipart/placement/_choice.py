"""Which partitions of one node a pod gets, and how good that node is for it (0..10).

Topology first: a tensor-parallel pod goes onto one GPU if it can, else onto the fewest GPUs
(a node's MI300X GPUs form one XGMI hive, so any set works; fewer GPUs means less traffic over
the links and fewer GPUs pinned). Then the policy:

- binpack: the fit that leaves the least memory on the chosen partitions, then the GPU that is
  already the most used, so small pods fill small partitions and idle GPUs stay idle for the
  re-partition planner;
- spread: the emptiest partition, then the emptiest GPU, then the most compute units, so a
  latency pod shares as little as possible.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from mipart.geometry import ComputeMode
from mipart.placement._node_state import NodeState
from mipart.placement._parts import Ladder, Part
from mipart.placement._types import PartitionRequest, Placement, Policy, Sharing

# (partition, memory it keeps beyond the request)
Candidate = tuple[Part, int]
# (GPUs, policy terms..., partition positions for a deterministic tie-break)
SetKey = tuple[int, int, int, int, list[tuple[int, int]]]


def choose(state: NodeState, request: PartitionRequest, policy: Policy) -> Placement | str:
    """The placement on this node, or the reason there is none."""
    reason = state.check(request)
    if reason is not None:
        return reason
    exclusive = request.sharing is Sharing.EXCLUSIVE
    ladder = _ladder(state, request.compute_mode, exclusive, policy)
    if request.partitions == 1:
        chosen = [_first_fit(ladder, request.memory_bytes, policy)]
    else:
        chosen = _best_set(state, ladder, request, policy)
    return _placement(state, chosen, policy)


def _ladder(state: NodeState, mode: ComputeMode | None, exclusive: bool, policy: Policy) -> Ladder:
    """The node's partitions that a pod of this kind may use, in the policy's order, with the
    room each has (cached on the node until it changes: every request shape reuses it).

    Binpack orders by room, so the tightest fit is found by bisection; spread orders by use,
    so the emptiest partitions come first and a scan stops early.
    """
    key = f"{mode or 'any'}/{exclusive}/{policy}"
    ladder = state.ladders.get(key)
    if ladder is not None:
        return ladder
    rungs: list[tuple[int, Part]] = []
    for part in state.parts:
        if not part.usable or (mode is not None and part.mode is not mode):
            continue
        # Room is the same rule for both kinds (Part.room, instance_budget); an exclusive pod
        # needs an idle partition, a shared one any not held exclusively.
        if (part.instances == 0) if exclusive else not part.exclusive:
            rungs.append((part.room, part))
    part_key = _part_key(state, policy)
    rungs.sort(key=lambda rung: part_key(rung[1], rung[0]))
    ladder = state.ladders[key] = ([room for room, _ in rungs], [part for _, part in rungs])
    return ladder


def _first_fit(ladder: Ladder, need: int, policy: Policy) -> Candidate:
    rooms, parts = ladder
    if policy is Policy.BINPACK:
        at = bisect_left(rooms, need)
        return parts[at], rooms[at] - need
    for room, part in zip(rooms, parts, strict=True):
        if room >= need:
            return part, room - need
    raise AssertionError("check() said the request fits")


PartKey = Callable[[Part, int], tuple[int, ...]]


def _part_key(state: NodeState, policy: Policy) -> PartKey:
    gpu_used = state.gpu_used
    if policy is Policy.BINPACK:
        return lambda p, room: (room, -gpu_used[p.gpu], p.gpu, p.index)
    return lambda p, room: (p.used_bytes, gpu_used[p.gpu], -p.cus, p.gpu, p.index)


def _best_set(
    state: NodeState, ladder: Ladder, request: PartitionRequest, policy: Policy
) -> list[Candidate]:
    """``k`` partitions of one compute mode: one GPU if possible, else the fewest GPUs."""
    k, need = request.partitions, request.memory_bytes
    rooms, parts = ladder
    start = bisect_left(rooms, need) if policy is Policy.BINPACK else 0
    # Grouping in ladder order keeps every GPU's list in the policy's order.
    groups: dict[ComputeMode, dict[int, list[Candidate]]] = {}
    for room, part in zip(rooms[start:], parts[start:], strict=True):
        if room >= need:
            groups.setdefault(part.mode, {}).setdefault(part.gpu, []).append((part, room - need))
    options: list[list[Candidate]] = []
    for per_gpu in groups.values():
        if sum(map(len, per_gpu.values())) < k:
            continue
        on_one = [members[:k] for members in per_gpu.values() if len(members) >= k]
        options.extend(on_one or [_fill_fewest_gpus(state, per_gpu, k, policy)])
    return min(options, key=lambda option: _set_key(state, option, policy))


def _fill_fewest_gpus(
    state: NodeState, per_gpu: dict[int, list[Candidate]], k: int, policy: Policy
) -> list[Candidate]:
    # Taking GPUs by how many fitting partitions they offer, most first, gives the fewest GPUs.
    sign = -1 if policy is Policy.BINPACK else 1

    def order(gpu: int) -> tuple[int, int, int]:
        return (-len(per_gpu[gpu]), sign * state.gpu_used[gpu], gpu)

    chosen: list[Candidate] = []
    for gpu in sorted(per_gpu, key=order):
        chosen.extend(per_gpu[gpu][: k - len(chosen)])
        if len(chosen) == k:
            break
    return chosen


def _set_key(state: NodeState, chosen: list[Candidate], policy: Policy) -> SetKey:
    gpus = {part.gpu for part, _ in chosen}
    gpu_used = sum(state.gpu_used[g] for g in gpus)
    ids = sorted((part.gpu, part.index) for part, _ in chosen)
    if policy is Policy.BINPACK:
        return (len(gpus), sum(left for _, left in chosen), -gpu_used, 0, ids)
    used = sum(part.used_bytes for part, _ in chosen)
    return (len(gpus), used, gpu_used, -sum(part.cus for part, _ in chosen), ids)


def _placement(state: NodeState, chosen: list[Candidate], policy: Policy) -> Placement:
    # Plain loops: this runs once per feasible node on a cold evaluation (5000 nodes).
    if len(chosen) > 1:
        chosen = sorted(chosen, key=lambda c: (c[0].gpu, c[0].index))
    size = leftover = used = 0
    for part, left in chosen:
        size += part.size
        leftover += left
        used += part.used_bytes
    node_use = min(state.used_bytes / state.total_bytes, 1.0) if state.total_bytes else 0.0
    if policy is Policy.BINPACK:
        # A tight fit on a busy node scores high: fewer holes, whole idle GPUs elsewhere.
        merit = (1.0 - leftover / size) + node_use
    else:
        # An empty partition on an empty node scores high: nobody to interfere with.
        merit = (1.0 - node_use) + (1.0 - min(used / size, 1.0))
    return Placement(
        node=state.name,
        partition_ids=tuple([part.id for part, _ in chosen]),
        score=max(0, min(10, int(5.0 * merit + 0.5))),
        policy=policy,
        compute_mode=chosen[0][0].mode,
        gpus=tuple(sorted({part.gpu for part, _ in chosen})),
        leftover_bytes=leftover,
    )
