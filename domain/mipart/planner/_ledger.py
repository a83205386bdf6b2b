"""The re-partition planner's decisions, deferrals and admissions, with their reasons
(internal). The reasons become Events, so they name the GPUs, the modes and the pods, and say
why; the holds and modes become metric labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mipart.geometry import Rounding, auto_compute_mode, format_bytes
from mipart.planner._nodes import NodePlan
from mipart.planner._types import (
    Admission,
    ComputeChange,
    Decision,
    Deferral,
    Hold,
    MemoryChange,
    PlannerPolicy,
    Waiting,
)
from mipart.planner._whatif import Option, WhatIf


class Ledger:
    """Turns committed options into decisions or deferrals, with reasons and the bound."""

    def __init__(
        self, policy: PlannerPolicy, now: float, demand: Sequence[Waiting], budget: int
    ) -> None:
        self.policy = policy
        self.now = now
        self.demand = demand
        self.budget = budget
        self.decisions: list[Decision] = []
        self.deferrals: list[Deferral] = []
        self.admitted: list[Admission] = []
        self.promised: list[Admission] = []

    def count(self, counted: tuple[list[Admission], list[Admission]]) -> None:
        admitted, promised = counted
        self.admitted.extend(admitted)
        self.promised.extend(promised)

    def record(self, whatif: WhatIf, option: Option) -> None:
        self.count(whatif.counted(option))
        if not option.changes:
            return
        node = whatif.nodes[option.node]
        cooling = any(node.gpus[g].cooling for g in option.changes)
        why = _fits(self.demand, option)
        hold = self._hold(option, len(option.changes), cooling=cooling)
        if hold is not None:
            self.deferrals.append(
                Deferral(option.node, option.changes, option.mode, hold, self._held(hold, why))
            )
            return
        self.budget -= len(option.changes)
        for gpu in option.changes:
            source = node.gpus[gpu].real
            reason = f"idle GPU {gpu}: {source} -> {option.mode} so that {why}"
            self.decisions.append(ComputeChange(option.node, gpu, source, option.mode, reason))

    def record_reload(self, whatif: WhatIf, node: NodePlan, options: list[Option]) -> None:
        for option in options:
            self.count(whatif.counted(option))
        source, target = node.snapshot.memory_mode, node.memory
        placed = sum(o.placed_bytes for o in options)
        pods = sum(len(o.placements) for o in options)
        why = (
            f"{pods} waiting pods ({_gib(placed)}) need compute modes that {source} does not "
            f"allow; every GPU of the node is idle"
        )
        last = node.snapshot.memory_changed_at
        cooling = last is not None and self.now - last < self.policy.memory_cooldown_s
        # The what-if of the reload forgot the GPUs' own cool-downs; the snapshot has them.
        changed = node.snapshot.gpu_changed_at.values()
        cooling = cooling or any(self.now - t < self.policy.cooldown_s for t in changed)
        hold = self._hold_all(options, len(node.gpus), cooling=cooling)
        if hold is not None:
            gpus = tuple(sorted(node.gpus))
            reason = self._held(hold, f"{source} -> {target} (driver reload): {why}", reload=True)
            self.deferrals.append(Deferral(node.name, gpus, target, hold, reason))
            return
        self.budget -= len(node.gpus)
        reload = f"{source} -> {target} (driver reload of all {len(node.gpus)} GPUs): {why}"
        self.decisions.append(MemoryChange(node.name, source, target, reload))
        # The reload leaves every GPU in the driver's AUTO mode; the others are asked for.
        auto = auto_compute_mode(target)
        for option in (o for o in options if o.mode is not auto):
            fits = f"{auto} -> {option.mode} so that {_fits(self.demand, option)}"
            for gpu in option.gpus:
                reason = f"GPU {gpu} after the reload to {target}: {fits}"
                self.decisions.append(ComputeChange(node.name, gpu, auto, option.mode, reason))

    def _hold(self, option: Option, gpus: int, *, cooling: bool) -> Hold | None:
        return self._hold_all((option,), gpus, cooling=cooling)

    def _hold_all(self, options: Sequence[Option], gpus: int, *, cooling: bool) -> Hold | None:
        settled = any(
            self.now - self.demand[pos].since >= self.policy.settle_s
            for option in options
            for pos, _ in option.placements
        )
        if not settled:
            return Hold.SETTLING
        if cooling:
            return Hold.COOLDOWN
        if gpus > self.budget:
            return Hold.BOUND
        return None

    def _held(self, hold: Hold, why: str, *, reload: bool = False) -> str:
        policy = self.policy
        if hold is Hold.SETTLING:
            return f"waiting {policy.settle_s:g}s for the demand to settle: {why}"
        if hold is Hold.COOLDOWN:
            each = f"{policy.cooldown_s:g}s per GPU"
            if reload:
                each += f", {policy.memory_cooldown_s:g}s between reloads"
            return f"held by the cool-down ({each}): {why}"
        return f"held: {policy.max_changing} GPUs may change at once in the cluster: {why}"


def _fits(demand: Sequence[Waiting], option: Option) -> str:
    """``8 waiting pods fit (8 x 18.4Gi, CPX partitions 77% filled): llama-0, llama-1, ...``"""
    sizes = Counter(
        (a.memory_bytes, len(a.partition_ids)) for _, a in option.placements
    ).most_common()
    shown = ", ".join(
        f"{n} x {format_bytes(mem, Rounding.UP)}" + (f" on {k} partitions" if k > 1 else "")
        for (mem, k), n in sizes
    )
    names = [demand[pos].name for pos, _ in option.placements if demand[pos].name]
    listed = f": {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}" if names else ""
    count = len(option.placements)
    noun = "pod fits" if count == 1 else "pods fit"
    filled = f"{option.mode} partitions {option.fill:.0%} filled"
    return f"{count} waiting {noun} ({shown}, {filled}){listed}"


def _gib(amount: int) -> str:
    return format_bytes(amount, Rounding.DOWN)
