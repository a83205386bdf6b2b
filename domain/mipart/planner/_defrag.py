"""Defragmentation, opt-in (PlannerPolicy.defragment): free a nearly empty GPU of its batch
pods when the pods still waiting, of a more urgent class, could use it whole (internal).

After a round's plan, pods of the latency or standard class may still wait although the
cluster has room, scattered: a GPU holds a few batch pods in a mode the waiting pods cannot
use, and no GPU is idle. The planner then proposes evicting the batch pods of such a GPU when

- every allocation on it is a batch pod (latency and standard pods are never evicted; pods
  whose class is not known are not either), and they hold at most ``defrag_max_used`` of the
  GPU's memory ("nearly empty");
- the GPU could change mode now (not cooling, not drained or sick, the node ready), and the
  cluster-wide bound on changing GPUs leaves room for it;
- given a mode, the GPU would take waiting pods of the more urgent classes holding at least
  ``defrag_min_gain`` times the memory the evicted pods give up.

At most ``defrag_per_round`` GPUs per round, the best gain first. The controller evicts
through the Eviction API, so a PodDisruptionBudget can refuse it; the evicted pods' owners
recreate them and they queue again. Once the GPU is idle the next round plans it like any
other, for the pods that wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from mipart.geometry import GPU_MEMORY_BYTES, Rounding, format_bytes, gpu_of_partition_id
from mipart.placement import QOS_RANK, Allocation, QosClass, instance_footprint
from mipart.planner._nodes import NodePlan
from mipart.planner._types import ComputeChange, Eviction, Plan, PlannerPolicy
from mipart.planner._whatif import Given, WhatIf

_BATCH = QOS_RANK[QosClass.BATCH]


def defragment(given: Given, answer: Plan, classes: Mapping[str, QosClass]) -> tuple[Eviction, ...]:
    """The evictions to propose after ``answer``, the round's plan (see the module)."""
    plans, allocations, demand, policy = given.plans, given.allocations, given.demand, given.policy
    counted = {a.position for a in (*answer.admitted, *answer.promised)}
    urgent = [
        pos
        for pos in given.order
        if pos not in counted and QOS_RANK[demand[pos].request.qos] < _BATCH
    ]
    budget = given.budget - sum(1 for d in answer.decisions if isinstance(d, ComputeChange))
    if not urgent or budget <= 0:
        return ()
    by_gpu = _batch_only_gpus(plans, allocations, classes, policy)
    found: list[tuple[int, Eviction]] = []
    for (name, gpu), evicted in by_gpu.items():
        node = next(n for n in plans if n.name == name)
        kept = [a for a in allocations if a.node == name and a not in evicted]
        trial_node = node.copy()
        trial_node.gpus[gpu] = replace(trial_node.gpus[gpu], flexible=True, committed=False)
        trial = WhatIf((trial_node,), kept, demand, policy.change_penalty, urgent)
        options = [o for o in trial.options() if o.gpus == (gpu,)]
        if not options:
            continue
        best = max(options, key=lambda o: o.placed_bytes)
        freed = sum(a.total_bytes for a in evicted)
        if best.placed_bytes < policy.defrag_min_gain * freed:
            continue
        pods = len(best.placements)
        reason = (
            f"GPU {gpu} holds only batch pods ({len(evicted)}, {_gib(freed)}): evicting them "
            f"lets it become {best.mode} for {pods} waiting more urgent "
            f"{'pod' if pods == 1 else 'pods'} ({_gib(best.placed_bytes)})"
        )
        eviction = Eviction(name, gpu, tuple(sorted(a.pod_uid for a in evicted)), best.mode,
                            reason)  # fmt: skip
        found.append((best.placed_bytes - freed, eviction))
    found.sort(key=lambda f: (-f[0], f[1].node, f[1].gpu))
    chosen: list[Eviction] = []
    for _, eviction in found:
        if len(chosen) >= min(policy.defrag_per_round, budget):
            break
        if all(e.node != eviction.node for e in chosen):
            chosen.append(eviction)
    return tuple(chosen)


def _batch_only_gpus(
    plans: Sequence[NodePlan],
    allocations: Iterable[Allocation],
    classes: Mapping[str, QosClass],
    policy: PlannerPolicy,
) -> dict[tuple[str, int], list[Allocation]]:
    """GPUs that may be freed: held only by batch pods, nearly empty, able to change."""
    on_gpu: dict[tuple[str, int], list[Allocation]] = {}
    spans: set[tuple[str, int]] = set()
    for allocation in allocations:
        gpus = {gpu_of_partition_id(p) for p in allocation.partition_ids}
        for gpu in gpus:
            if gpu is None:
                continue
            on_gpu.setdefault((allocation.node, gpu), []).append(allocation)
            if len(gpus) > 1:
                spans.add((allocation.node, gpu))  # a pod over several GPUs: leave it be
    usable: dict[tuple[str, int], list[Allocation]] = {}
    nodes = {n.name: n for n in plans}
    for (name, gpu), held in on_gpu.items():
        node = nodes.get(name)
        plan = node.gpus.get(gpu) if node is not None else None
        if node is None or plan is None or (name, gpu) in spans or plan.cooling:
            continue
        if not _changeable(node, gpu):
            continue
        if any(classes.get(a.pod_uid) is not QosClass.BATCH for a in held):
            continue
        used = sum(instance_footprint(a.memory_bytes) * len(a.partition_ids) for a in held)
        if used <= policy.defrag_max_used * GPU_MEMORY_BYTES:
            usable[name, gpu] = held
    return usable


def _changeable(node: NodePlan, gpu: int) -> bool:
    """The GPU could change once its pods are gone: the node ready and not changing, the GPU
    not drained, sick, busy with processes no allocation accounts for, or switching."""
    snapshot = node.snapshot
    capacity = snapshot.capacity
    sick = {p.geometry.gpu_index for p in capacity.partitions if not p.healthy}
    return (
        capacity.ready
        and snapshot.reloading is None
        and gpu not in capacity.drained_gpus | sick | snapshot.busy_gpus
        and gpu not in snapshot.switching
    )


def _gib(amount: int) -> str:
    return format_bytes(amount, Rounding.DOWN)
