"""Alternating demand for the packing benchmark: how many changes the planner's brakes allow.

70B replicas, then 8B replicas, flipping every few minutes on a small cluster that starts all
SPX; each phase's pods go at the flip. One simulated hour with the planner's default brakes
and with none, through the same simulated cluster as the traces (packing_sim.Cluster).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hack.bench.packing_sim import Cluster
from hack.bench.report import print_table
from hack.bench.traces import GPUS_PER_NODE
from mipart.geometry import ComputeMode, MemoryMode, NodeLayout
from mipart.placement import PartitionRequest, Sharing
from mipart.planner import PlannerPolicy
from mipart.sizing import estimate, lookup

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Alternation:
    """70B replicas, then 8B replicas, flipping every ``period_s``; a phase's pods go at the
    flip. Each phase wants three quarters of the GPUs, in SPX or in CPX."""

    nodes: int
    period_s: float

    def phase(self, index: int) -> list[tuple[str, PartitionRequest]]:
        gpus = self.nodes * GPUS_PER_NODE * 3 // 4
        model, count = (LLAMA_70B, gpus) if index % 2 == 0 else (LLAMA_8B, gpus * 8)
        memory = estimate(lookup(model), max_model_len=8192).per_partition_bytes
        request = PartitionRequest(memory, sharing=Sharing.EXCLUSIVE)
        return [(f"phase{index}-{i}", request) for i in range(count)]


@dataclass(frozen=True, slots=True)
class Churn:
    policy: str
    period_s: float
    changes: int  # GPU compute-mode changes in the hour
    per_gpu: int  # the most any one GPU changed
    most_changing: int
    served: float  # time-averaged share of the current phase's replicas bound
    timeline: list[tuple[float, float, int]]  # (t, served, changes so far)


def run_alternating(pattern: Alternation, name: str, policy: PlannerPolicy) -> Churn:
    spx = NodeLayout(MemoryMode.NPS1, dict.fromkeys(range(GPUS_PER_NODE), ComputeMode.SPX))
    cluster = Cluster({f"mi300x-{i:02d}": spx for i in range(pattern.nodes)}, planner=policy)
    timeline: list[tuple[float, float, int]] = []
    phase = -1
    while cluster.now < HOUR_S:
        if cluster.now >= (phase + 1) * pattern.period_s:
            if phase >= 0:
                cluster.depart(name for name, _ in pattern.phase(phase))
            phase += 1
            cluster.arrive(pattern.phase(phase))
        now = cluster.now
        cluster.tick()
        wanted = pattern.phase(phase)
        served = sum(name in cluster.bound for name, _ in wanted) / len(wanted)
        timeline.append((now, served, cluster.stats.compute_changes))
    per_gpu = Counter((node, gpu) for _, node, gpu in cluster.stats.changes)
    return Churn(
        policy=name,
        period_s=pattern.period_s,
        changes=cluster.stats.compute_changes,
        per_gpu=max(per_gpu.values(), default=0),
        most_changing=cluster.stats.most_changing,
        served=sum(s for _, s, _ in timeline) / len(timeline),
        timeline=timeline,
    )


def alternation(nodes: int, periods: tuple[float, ...]) -> list[Churn]:
    defaults = PlannerPolicy()
    # No hysteresis at all: what the brakes are measured against.
    unbraked = PlannerPolicy(settle_s=0, cooldown_s=0, max_changing=10**6, change_penalty=0)
    runs = [
        run_alternating(Alternation(nodes, period), name, policy)
        for period in periods
        for name, policy in (("default brakes", defaults), ("no brakes", unbraked))
    ]
    print(f"\nalternating demand on {nodes} nodes ({nodes * GPUS_PER_NODE} GPUs, all SPX at the "
          f"start): {nodes * 6} Llama-3.1-70B bf16 replicas, then {nodes * 48} Llama-3.1-8B "
          "bf16 replicas, each phase's pods gone at the flip; one simulated hour")  # fmt: skip
    print(f"default brakes: settle {defaults.settle_s:g}s, cool-down {defaults.cooldown_s:g}s "
          f"per GPU, at most {defaults.max_changing} GPUs changing at once")  # fmt: skip
    headers = ["flip every", "planner", "GPU changes/h", "most per GPU", "most at once",
               "demand served"]  # fmt: skip
    rows = [
        [f"{r.period_s / 60:g} min", r.policy, r.changes, r.per_gpu, r.most_changing,
         f"{r.served:.0%}"]
        for r in runs
    ]  # fmt: skip
    print_table(headers, rows)
    return runs
