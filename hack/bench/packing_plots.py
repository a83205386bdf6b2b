"""The packing benchmark's figures (matplotlib, Agg: files only, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from hack.bench.packing_churn import Churn
    from hack.bench.packing_metrics import Result


def traces(results: Mapping[str, Sequence[Result]], path: Path) -> None:
    """Memory placed as a share of the optimum, per strategy, one group of bars per trace."""
    kinds = list(results)
    strategies = [r.strategy for r in next(iter(results.values()))]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(strategies)
    for i, strategy in enumerate(strategies):
        shares = []
        for kind in kinds:
            rows = results[kind]
            shares.append(100 * rows[i].placed_bytes / rows[-1].placed_bytes)
        xs = [k + (i - (len(strategies) - 1) / 2) * width for k in range(len(kinds))]
        bars = ax.bar(xs, shares, width, label=strategy)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(kinds)), [f"{k} trace" for k in kinds])
    ax.set_ylabel("memory placed, % of the optimum")
    ax.set_ylim(0, 110)
    ax.axhline(97, color="grey", linestyle=":", linewidth=1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    ax.set_title("Packing vLLM replicas on MI300X partitions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def alternation(runs: Sequence[Churn], path: Path) -> None:
    """Per flip period: demand served and cumulative GPU changes over the hour."""
    periods = sorted({r.period_s for r in runs})
    fig, axes = plt.subplots(2, len(periods), figsize=(4 * len(periods), 5), sharex=True)
    for column, period in enumerate(periods):
        served_ax, changes_ax = axes[0][column], axes[1][column]
        for run in (r for r in runs if r.period_s == period):
            minutes = [t / 60 for t, _, _ in run.timeline]
            served_ax.plot(minutes, [100 * s for _, s, _ in run.timeline], label=run.policy)
            changes_ax.plot(minutes, [c for _, _, c in run.timeline], label=run.policy)
        served_ax.set_title(f"demand flips every {period / 60:g} min", fontsize=10)
        served_ax.set_ylim(0, 105)
        changes_ax.set_xlabel("minutes")
    axes[0][0].set_ylabel("% of the phase's replicas bound")
    axes[1][0].set_ylabel("GPU changes so far")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
