"""Why a node cannot take a pod, in words a user reads in a FailedScheduling event.

The scheduler groups nodes by reason (``summarize_rejections``), so a reason never names the
node and identical situations give identical strings. Amounts a node *has* round down and
amounts a pod *needs* round up, so a reason never reads "needs 23Gi, has 23Gi".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import lru_cache

from mipart.geometry import ComputeMode, Rounding, format_bytes

UNKNOWN_NODE = "no GPU inventory for this node"
NOT_READY = "node not ready: daemon heartbeat stale"
NO_PARTITIONS = "node reports no GPU partitions"
ALL_DRAINED = "all GPUs drained"
NONE_HEALTHY = "no healthy partition on an undrained GPU"
UNKNOWN_PARTITIONS = "holds allocations on partitions the node no longer reports"
# What no eviction can change: the node itself takes no pods now. filter reports these apart
# (kube-scheduler then tries no preemption there), and preemption never picks victims there.
UNRESOLVABLE = frozenset({UNKNOWN_NODE, NOT_READY, NO_PARTITIONS, ALL_DRAINED, NONE_HEALTHY})


def _has(amount: int) -> str:
    return format_bytes(max(amount, 0), Rounding.DOWN)


def _needs(amount: int) -> str:
    return format_bytes(amount, Rounding.UP)


def _mode(mode: ComputeMode | None) -> str:
    return f"{mode} " if mode is not None else ""


@lru_cache(maxsize=4096)
def no_usable_mode(mode: ComputeMode) -> str:
    return f"no usable {mode} partition"


@lru_cache(maxsize=4096)
def partitions_too_small(
    *,
    largest: int,
    largest_mode: ComputeMode,
    only_mode: bool,
    requested_mode: bool,
    usable: int | None,
) -> str:
    """No partition could ever hold the pod, even empty: the layout is the problem.

    ``usable`` (instance_budget of the largest partition) is set when only the memory every
    instance holds outside its budget is in the way, so the user sees that a slightly smaller
    request would fit, exclusive or shared.
    """
    if requested_mode:
        text = f"{largest_mode} partitions are {_has(largest)}"
    elif only_mode:
        text = f"{largest_mode} only: {_has(largest)} partitions"
    else:
        text = f"partitions too small: largest {_has(largest)} ({largest_mode})"
    if usable is not None:
        text += f" ({_has(usable)} usable by an instance)"
    return text


@lru_cache(maxsize=4096)
def no_free_partition(*, need: int, largest_free: int, mode: ComputeMode | None) -> str:
    return f"no {_mode(mode)}partition with {_needs(need)} free (largest free {_has(largest_free)})"


@lru_cache(maxsize=4096)
def no_idle_partition(*, need: int, largest_idle: int | None, mode: ComputeMode | None) -> str:
    """``largest_idle``: the most an instance may have on an idle partition (instance_budget
    of the largest idle one), None when none is idle."""
    idle = "none idle" if largest_idle is None else f"largest idle: {_has(largest_idle)} usable"
    return f"no idle {_mode(mode)}partition with {_needs(need)} usable ({idle})"


@lru_cache(maxsize=4096)
def too_few_partitions(
    *, count: int, need: int, fit: int, exclusive: bool, mode: ComputeMode | None, mixed: bool
) -> str:
    """A tensor-parallel pod needs ``count`` partitions of one compute mode on one node.

    ``mixed``: enough partitions fit in total, but not of a single compute mode.
    """
    kind = f"{'idle ' if exclusive else ''}{_mode(mode)}partitions"
    if mixed:
        kind += " of one compute mode"
    free = " usable" if exclusive else " free"
    return f"needs {count} {kind} with {_needs(need)}{free} on one node, {fit} fit"


def summarize_rejections(rejected: Mapping[str, str]) -> str:
    """``"2 nodes: no partition with 150Gi free (largest free 96Gi); 1 node: all GPUs drained"``.

    Largest group first, then alphabetically, so the message is stable between retries.
    """
    groups = Counter(rejected.values())
    ordered = sorted(groups.items(), key=lambda item: (-item[1], item[0]))
    return "; ".join(f"{n} node{'s' if n != 1 else ''}: {reason}" for reason, n in ordered)
