#!/usr/bin/env python3
"""Packing: demand-driven partitioning against static layouts and an exact optimum.

For each seeded trace (small models, large models, mixed, at 65-75 % of the fleet's memory; and
the over-subscribed ones, 100-130 %, with QoS classes in two of them), every replica is
released in queue order to the placement engine on a cluster of MI300X nodes partitioned by
each strategy:

- whole GPU: every GPU in SPX, one pod per GPU (what a device plugin alone gives);
- static all-CPX: every node CPX/NPS4, AMD's validated small-model layout;
- DCM 4 SPX + 4 CPX: the same heterogeneous profile on every node (Device Config Manager);
- DCM profile per node: the operator's default profiles round-robin over the nodes
  (default SPX/NPS1, dpx_nps2_all, qpx_nps1_all, cpx_nps4_all);
- demand-driven: mipart, from the per-node DCM fleet and from all-SPX nodes — the
  re-partition planner changes idle GPUs (and, when a whole node is idle and it pays, its
  memory mode) under its default brakes, simulated daemons apply the changes, the engine
  places each admitted pod on the partitions the plan counted;
- optimum: the HiGHS integer program of packing_ilp.py (with QoS classes: latency first, then
  standard, then batch), its allocations checked by the engine.

Then demand that turns over (epochs of departures and arrivals, packing_turnover.py) with
defragmentation off and on, and an alternating demand (70B replicas, then 8B replicas,
flipping every few minutes) runs for an hour with and without the planner's brakes, to count
the changes it causes.
Prints tables and writes plots (docs/packing.png, docs/packing-alternating.png). Figures only:
nothing here passes or fails (hack/bench/README.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from statistics import median

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout
from mipart.placement import QosClass
from mipart.planner import PlannerPolicy

# This file runs as a script; its shared helpers are found from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hack.bench import packing_churn, packing_ilp, packing_plots, packing_turnover
from hack.bench.packing_metrics import Result, layout_summary, measure
from hack.bench.packing_sim import Cluster
from hack.bench.report import machine, print_table
from hack.bench.traces import GPUS_PER_NODE, generate

REPO = Path(__file__).resolve().parents[2]
S, D, Q, C = ComputeMode.SPX, ComputeMode.DPX, ComputeMode.QPX, ComputeMode.CPX
NPS1, NPS2, NPS4 = MemoryMode.NPS1, MemoryMode.NPS2, MemoryMode.NPS4
GIB = 2**30
# The ROCm GPU operator's default DCM profiles (docs/facts-mi300x.md#device-config-manager), one
# per node in turn.
DCM_FLEET = ((NPS1, S), (NPS2, D), (NPS1, Q), (NPS4, C))
HORIZON_S = 4 * 3600.0
TRACES = ("small", "large", "mixed", "over-mixed", "over-large", "over-mixed-qos")
DEMAND_DRIVEN = ("demand-driven from DCM", "demand-driven from SPX")
TURNOVER_KIND = "over-mixed-qos"
TURNOVER_SEEDS = 4  # each seed's turnover takes about two minutes


def uniform(memory: MemoryMode, *modes: ComputeMode) -> NodeLayout:
    """``modes`` repeated over the node's GPUs."""
    per = GPUS_PER_NODE
    return NodeLayout(memory, {g: modes[g * len(modes) // per] for g in range(per)})


def strategies(nodes: list[str]) -> dict[str, dict[str, NodeLayout]]:
    dcm = {n: uniform(*DCM_FLEET[i % len(DCM_FLEET)]) for i, n in enumerate(nodes)}
    return {
        "whole GPU (device plugin)": {n: uniform(NPS1, S) for n in nodes},
        "static all-CPX (NPS4)": {n: uniform(NPS4, C) for n in nodes},
        "DCM 4 SPX + 4 CPX per node": {n: uniform(NPS1, S, C) for n in nodes},
        "DCM profile per node": dcm,
    }


def run_trace(kind: str, seed: int, count: int, *, show: bool = True) -> list[Result]:
    trace = generate(kind, seed=seed, nodes=count)
    pods = trace.replicas()
    nodes = [f"mi300x-{i:02d}" for i in range(count)]
    results: list[Result] = []
    for name, layouts in strategies(nodes).items():
        cluster = Cluster(layouts)
        cluster.arrive(pods)
        cluster.run(0)
        results.append(_measure(name, cluster, len(pods)))
    starts = {
        DEMAND_DRIVEN[0]: strategies(nodes)["DCM profile per node"],
        DEMAND_DRIVEN[1]: {n: uniform(NPS1, S) for n in nodes},
    }
    for name, layouts in starts.items():
        started = time.perf_counter()
        cluster = Cluster(layouts, planner=PlannerPolicy())
        cluster.arrive(pods)
        cluster.run(HORIZON_S)
        wall = time.perf_counter() - started
        stats = cluster.stats
        note = (
            f"{stats.compute_changes} GPU changes, {stats.memory_changes} reloads, "
            f"at most {stats.most_changing} at once; settled at {cluster.now / 60:.0f} min "
            f"(simulated, {wall:.0f}s to compute)"
        )
        results.append(_measure(name, cluster, len(pods), note))
    optimum = packing_ilp.solve([r for _, r in pods], nodes, GPUS_PER_NODE, time_limit=60)
    view = packing_ilp.check(optimum)
    placed = {int(a.pod) for a in optimum.allocations}
    waiting = [r for i, (_, r) in enumerate(pods) if i not in placed]
    note = f"HiGHS: {optimum.status}, MIP gap {optimum.gap:.2%}, {optimum.seconds:.2f}s"
    classes = {str(i): r.qos for i, (_, r) in enumerate(pods)}
    results.append(
        measure("optimum (ILP)", view, optimum.layouts, waiting, len(pods), note, classes)
    )
    if show:
        _print(trace.name, trace.seed, len(trace.deployments), results)
    return results


def _measure(name: str, cluster: Cluster, demanded: int, note: str = "") -> Result:
    waiting = [request for request, _ in cluster.waiting.values()]
    classes = {n: r.qos for n, r in cluster.requests.items()}
    return measure(name, cluster.view, cluster.actual, waiting, demanded, note, classes)


def _print(kind: str, seed: int, deployments: int, results: list[Result]) -> None:
    best = results[-1].placed_bytes
    total = results[-1].total_bytes
    print(f"\n{kind} trace (seed {seed}): {deployments} Deployments, {results[0].demanded} "
          f"replicas, {total / GIB:.0f} GiB of GPU memory")  # fmt: skip
    rows = [
        [
            r.strategy,
            f"{r.placed}/{r.demanded}",
            round(r.placed_bytes / GIB),
            f"{r.stranded_bytes / GIB:.0f} ({r.stranded_bytes / r.total_bytes:.1%})",
            f"{r.placed_bytes / best:.1%}",
            layout_summary(r.gpus),
        ]
        for r in results
    ]
    headers = ["strategy", "replicas", "GiB placed", "GiB stranded", "of optimum", "GPUs"]
    print_table(headers, rows)
    if any(r.by_class.get(q) for r in results for q in (QosClass.LATENCY, QosClass.BATCH)):
        print("  GiB placed by class (latency / standard / batch), % of the optimum's:")
        for r in results:
            shares = [
                f"{r.by_class.get(q, 0) / GIB:.0f} ({_share(r, results[-1], q)})" for q in QosClass
            ]
            print(f"    {r.strategy:<27} {' / '.join(shares)}")
    for r in results:
        if r.note:
            print(f"  {r.strategy}: {r.note}")


def _share(result: Result, optimum: Result, qos: QosClass) -> str:
    best = optimum.by_class.get(qos, 0)
    return f"{100 * result.by_class.get(qos, 0) / best:.1f}%" if best else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=16, help="8-GPU nodes (default 16)")
    parser.add_argument("--quick", action="store_true", help="4 nodes, the mixed trace only")
    parser.add_argument("--plots", type=Path, default=REPO / "docs", help="where plots go")
    parser.add_argument("--seeds", type=int, default=0, help="also sweep seeds 1..N per trace")
    args = parser.parse_args()
    count = 4 if args.quick else args.nodes
    print(f"packing benchmark on {machine()}")
    print(f"{count} nodes x {GPUS_PER_NODE} MI300X; replicas exclusive; memory per replica from "
          "mipart.sizing.estimate")  # fmt: skip
    kinds = ("mixed",) if args.quick else TRACES
    results = {kind: run_trace(kind, args.seed, count) for kind in kinds}
    turnover(count, args.seed, epochs=3 if args.quick else 6)
    churn = packing_churn.alternation(min(count, 4), (300.0, 600.0, 1200.0))
    if args.seeds:
        sweep(kinds, args.seeds, count)
        turnover_sweep(count, min(args.seeds, TURNOVER_SEEDS), epochs=3 if args.quick else 6)
    if args.quick:
        print("\nplots: not written with --quick (the figures in docs/ come from a full run)")
        return 0
    packing_plots.traces(results, args.plots / "packing.png")
    packing_plots.alternation(churn, args.plots / "packing-alternating.png")
    print(f"\nplots: {args.plots / 'packing.png'}, {args.plots / 'packing-alternating.png'}")
    return 0


def turnover(count: int, seed: int, *, epochs: int) -> None:
    """Demand that turns over, from the DCM fleet: defragmentation off and on, and without
    aging (what the aging bound costs in memory placed)."""
    nodes = [f"mi300x-{i:02d}" for i in range(count)]
    layouts = strategies(nodes)["DCM profile per node"]
    policies = {
        "defragmentation off": PlannerPolicy(),
        "defragmentation on": PlannerPolicy(defragment=True),
        "no aging (largest first)": PlannerPolicy(aging_s=math.inf),
    }
    epoch_s = 1800.0
    runs = [
        (
            name,
            packing_turnover.run(
                TURNOVER_KIND, seed, layouts, name, epochs=epochs, epoch_s=epoch_s, policy=policy
            ),
        )
        for name, policy in policies.items()
    ]
    packing_turnover.show(TURNOVER_KIND, seed, runs, epochs, epoch_s, PlannerPolicy().aging_s)


def turnover_sweep(count: int, seeds: int, *, epochs: int) -> None:
    """The turnover trace over seeds 1..``seeds`` with the default policy: the worst epoch of
    each seed against each optimum."""
    nodes = [f"mi300x-{i:02d}" for i in range(count)]
    layouts = strategies(nodes)["DCM profile per node"]
    runs = [
        packing_turnover.run(TURNOVER_KIND, seed, layouts, "default", epochs=epochs,
                             epoch_s=1800.0, policy=PlannerPolicy())
        for seed in range(1, seeds + 1)
    ]  # fmt: skip
    print(f"\nturnover ({TURNOVER_KIND}, default policy), worst epoch of each seed, % of each "
          f"optimum, over seeds 1-{seeds} (worst / median / best)")  # fmt: skip
    figures = {
        "fair": [r.fair for r in runs],
        "urgent, of fair": [r.fair_urgent for r in runs],
        "keeping": [r.keeping for r in runs],
        "anew": [r.anew for r in runs],
    }
    print_table(
        ["optimum", "memory placed"],
        [[name, _spread([100 * min(s) for s in per_seed])] for name, per_seed in figures.items()],
    )
    overtaken = [len(r.overtaken) for r in runs]
    print(f"  overtaken after aging, per seed: {overtaken}")


def sweep(kinds: tuple[str, ...], seeds: int, count: int) -> None:
    """Each strategy's share of the optimum over seeds 1..``seeds``: worst, median, best."""
    print(f"\nmemory placed, % of the optimum, over seeds 1-{seeds} (worst / median / best)")
    shares: dict[str, dict[str, list[float]]] = {}
    latency: dict[str, dict[str, list[float]]] = {}
    for kind in kinds:
        for seed in range(1, seeds + 1):
            results = run_trace(kind, seed, count, show=False)
            best = results[-1]
            for r in results[:-1]:
                share = 100 * r.placed_bytes / best.placed_bytes
                shares.setdefault(r.strategy, {}).setdefault(kind, []).append(share)
                if r.strategy in DEMAND_DRIVEN and best.by_class.get(QosClass.LATENCY):
                    ratio = (
                        100 * r.by_class.get(QosClass.LATENCY, 0) / best.by_class[QosClass.LATENCY]
                    )
                    latency.setdefault(r.strategy, {}).setdefault(kind, []).append(ratio)
    rows = [
        [strategy, *(_spread(by_kind[kind]) for kind in kinds)]
        for strategy, by_kind in shares.items()
    ]
    print_table(["strategy", *kinds], rows)
    if latency:
        classed = [k for k in kinds if any(k in by_kind for by_kind in latency.values())]
        print("\nlatency-class memory placed, % of the optimum's (worst / median / best)")
        print_table(
            ["strategy", *classed],
            [[s, *(_spread(by_kind[k]) for k in classed)] for s, by_kind in latency.items()],
        )


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]:.1f} / {median(ordered):.1f} / {ordered[-1]:.1f}"


if __name__ == "__main__":
    sys.exit(main())
