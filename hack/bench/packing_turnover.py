"""Demand that turns over, for the packing benchmark: epochs in which some Deployments leave and
new ones arrive (traces.churn), through the simulated cluster (packing_sim.Cluster).

At the end of each epoch the memory placed is compared with three optima (packing_ilp), all
lexicographic by QoS class: *fair* keeps the pods running at the epoch's start where they are,
places the rest and keeps the aging promise (bound_keeping with aged=: the best a scheduler
that moves no running pod and keeps that promise could do); *keeping* is the same without the
promise (what it costs); *anew* places every pod present anew (solve), which also measures
what earlier epochs left where they are. The waits are
per QoS class and per size (the pod's natural compute mode), and a pod counts as *overtaken*
when, after it waited longer than the default aging bound (plus the time a change takes), a
younger pod of its size and of its class or a less urgent one was bound to partitions it fits:
what aging promises never happens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from hack.bench import packing_ilp
from hack.bench.packing_sim import Cluster, Timing
from hack.bench.report import percentile, print_table
from hack.bench.traces import GPUS_PER_NODE, churn
from mipart.geometry import ComputeMode, MemoryMode, NodeLayout
from mipart.placement import PartitionRequest, QosClass
from mipart.planner import PlannerPolicy, natural_mode

GIB = 2**30


@dataclass(slots=True)
class Turnover:
    """One run over the epochs of a churn trace."""

    start: str
    # memory placed / the optimum that keeps the epoch's running pods where they are and
    # keeps the aging promise, and for latency and standard
    fair: list[float] = field(default_factory=list)
    fair_urgent: list[float] = field(default_factory=list)
    # memory placed / the optimum that keeps the epoch's running pods where they are
    keeping: list[float] = field(default_factory=list)
    # the same for the latency and standard classes together, which defragmentation serves
    keeping_urgent: list[float] = field(default_factory=list)
    # memory placed / the optimum that places every pod anew, and for latency and standard
    anew: list[float] = field(default_factory=list)
    anew_urgent: list[float] = field(default_factory=list)
    waits: dict[tuple[QosClass, ComputeMode], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    still_waiting: dict[tuple[QosClass, ComputeMode], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    overtaken: set[str] = field(default_factory=set)
    evictions: int = 0
    changes: int = 0
    reloads: int = 0


def run(
    kind: str,
    seed: int,
    layouts: dict[str, NodeLayout],
    start: str,
    *,
    epochs: int,
    epoch_s: float,
    policy: PlannerPolicy,
) -> Turnover:
    trace = churn(kind, seed=seed, nodes=len(layouts), epochs=epochs)
    cluster = Cluster(layouts, planner=policy)
    timing = Timing()
    # Overtaking is counted against the default aging bound, also for a run without aging.
    bound = min(policy.aging_s, PlannerPolicy().aging_s)
    cluster.aging_after_s = bound + policy.settle_s + timing.reload_s + timing.step_s
    result = Turnover(start)
    present: dict[str, PartitionRequest] = {}
    for epoch, deployments in enumerate(trace.epochs):
        wanted = {f"{d.name}-{i}": d.request for d in deployments for i in range(d.replicas)}
        cluster.depart(name for name in present if name not in wanted)
        cluster.arrive((n, r) for n, r in wanted.items() if n not in present)
        present = wanted
        # What a scheduler that moves no running pod starts the epoch with.
        kept = list(cluster.bound.values())
        start_layouts = dict(cluster.actual)
        queued = sorted(cluster.waiting.values(), key=lambda w: w[1])  # oldest first
        aged = [cluster.now - since > cluster.aging_after_s for _, since in queued]
        end = (epoch + 1) * epoch_s
        while cluster.now < end:
            cluster.tick()
        placed = _by_class(
            (cluster.requests[a.pod], a.total_bytes) for a in cluster.view.allocations()
        )
        held = _by_class((cluster.requests[a.pod], a.total_bytes) for a in kept)
        queued_requests = [r for r, _ in queued]
        keeping = _plus(
            held, packing_ilp.bound_keeping(queued_requests, kept, start_layouts, time_limit=60)
        )
        fair = _plus(
            held,
            packing_ilp.bound_keeping(
                queued_requests, kept, start_layouts, time_limit=60, aged=aged
            ),
        )
        requests = list(present.values())
        best = packing_ilp.solve(requests, list(layouts), GPUS_PER_NODE, time_limit=60)
        anew = _by_class((requests[int(a.pod)], a.total_bytes) for a in best.allocations)
        result.fair.append(_ratio(placed, fair))
        result.fair_urgent.append(_ratio(placed, fair, urgent=True))
        result.keeping.append(_ratio(placed, keeping))
        result.keeping_urgent.append(_ratio(placed, keeping, urgent=True))
        result.anew.append(_ratio(placed, anew))
        result.anew_urgent.append(_ratio(placed, anew, urgent=True))
    for name, request in present.items():
        key = (request.qos, _size(request))
        if name in cluster.bound:
            continue
        result.still_waiting[key] += 1
    for name, bound_at in cluster.bound_at.items():
        request = cluster.requests[name]
        result.waits[(request.qos, _size(request))].append(bound_at - cluster.arrived_at[name])
    result.overtaken = cluster.overtaken
    result.evictions = cluster.stats.evictions
    result.changes = cluster.stats.compute_changes
    result.reloads = cluster.stats.memory_changes
    return result


def _by_class(placed: Iterable[tuple[PartitionRequest, int]]) -> dict[QosClass, int]:
    memory = dict.fromkeys(QosClass, 0)
    for request, total in placed:
        memory[request.qos] += total
    return memory


def _plus(a: dict[QosClass, int], b: dict[QosClass, int]) -> dict[QosClass, int]:
    return {q: a[q] + b[q] for q in QosClass}


def _ratio(
    placed: dict[QosClass, int], best: dict[QosClass, int], *, urgent: bool = False
) -> float:
    """``placed`` over ``best``, in all or (``urgent``) for the latency and standard classes."""
    counted = [q for q in QosClass if not urgent or q is not QosClass.BATCH]
    optimum = sum(best[q] for q in counted)
    return sum(placed[q] for q in counted) / optimum if optimum else 1.0


def _spread(shares: list[float]) -> str:
    return f"{100 * min(shares):.1f} / {100 * sum(shares) / len(shares):.1f}"


def _size(request: PartitionRequest) -> ComputeMode:
    mode = natural_mode(request, MemoryMode.NPS1, GPUS_PER_NODE)
    assert mode is not None
    return mode


def show(kind: str, seed: int, runs: list[tuple[str, Turnover]], epochs: int, epoch_s: float,
         aging_s: float) -> None:  # fmt: skip
    print(f"\nturnover ({kind}, seed {seed}): {epochs} epochs of {epoch_s / 60:g} min; at each "
          "new epoch every Deployment leaves with probability 0.3 and new ones arrive until "
          "the load is back")  # fmt: skip
    print("memory placed at the end of each epoch (worst / mean over the epochs), as a share "
          "of three optima: 'fair' keeps the pods running at the epoch's start where they are "
          "and the aging promise (no pod placed while an older aged pod of its class and size "
          "waits); 'keeping' keeps the running pods only; 'anew' places every pod anew. "
          "'urgent': latency and standard only")  # fmt: skip
    headers = ["run", "of fair", "urgent, of fair", "of keeping", "urgent, of keeping",
               "of anew", "urgent, of anew", "GPU changes", "reloads", "evictions",
               "overtaken after aging"]  # fmt: skip
    rows = [
        [name, _spread(r.fair), _spread(r.fair_urgent), _spread(r.keeping),
         _spread(r.keeping_urgent), _spread(r.anew), _spread(r.anew_urgent), r.changes,
         r.reloads, r.evictions, len(r.overtaken)]
        for name, r in runs
    ]  # fmt: skip
    print_table(headers, rows)
    print(f"waits from arrival to bind, minutes (aging bound {aging_s / 60:g} min; 'waiting': "
          "not placed at the end)")  # fmt: skip
    headers = ["run", "class", "size", "placed", "p50", "p95", "max", "waiting"]
    rows = []
    for name, r in runs:
        for qos in QosClass:
            for mode in sorted(ComputeMode, key=lambda m: m.partition_count):
                waits = r.waits.get((qos, mode), [])
                left = r.still_waiting.get((qos, mode), 0)
                if not waits and not left:
                    continue
                figures = [f"{percentile(waits, q) / 60:.1f}" if waits else "-"
                           for q in (50, 95, 100)]  # fmt: skip
                rows.append([name, qos.value, mode.value, len(waits), *figures, left])
    print_table(headers, rows)
