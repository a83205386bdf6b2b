"""Holds: a released pod the re-partition planner admitted is held, until its hold expires,
to exactly the partitions the plan counted it on (``mipart.io/planned-partitions``, written
by mipart-controller; docs/queue.md#holds). The extender binds it there and nowhere else, and
the controller counts those partitions as taken until the pod is bound, so that no other pod
planned or released meanwhile takes them. A hold on a node kube-scheduler itself rules out is
waived (Waivers).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from mipart.contract.planned_partitions import PlannedPartitions
from mipart.placement import Allocation, ClusterView, Feasibility, PartitionRequest

# The start of every reason a hold gives, and the metrics' label for them.
HELD = "held by the re-partition planner"


def held_allocation(
    hold: PlannedPartitions, request: PartitionRequest, *, pod: str, pod_uid: str
) -> Allocation:
    """The allocation a held pod is to get: the held partitions, with its limit and sharing."""
    return Allocation(
        pod=pod,
        pod_uid=pod_uid,
        node=hold.node,
        partition_ids=hold.partition_ids,
        memory_bytes=request.memory_bytes,
        sharing=request.sharing,
    )


def held_reason(hold: PlannedPartitions) -> str:
    """``held by the re-partition planner to mi300x-03 gpu2-dpx-0 until 2025-...Z``."""
    return f"{HELD} to {hold.describe()}"


def filter_held(
    view: ClusterView, hold: PlannedPartitions, allocation: Allocation, names: Iterable[str]
) -> Feasibility:
    """The extender's filter for a held pod: only the held node passes, and only if the
    engine would accept ``allocation`` there now (``ClusterView.conflict``: reserve's rules,
    nothing reserved). Every other node is unresolvable: evicting pods there cannot help a
    pod held elsewhere. The caller holds the view's lock."""
    reason = held_reason(hold)
    unresolvable = dict.fromkeys(names, reason)
    feasible: tuple[str, ...] = ()
    if hold.node in unresolvable:
        problem = view.conflict(allocation)
        if problem is None:
            del unresolvable[hold.node]
            feasible = (hold.node,)
        else:
            unresolvable[hold.node] = f"{reason}: {problem}"
    return Feasibility(feasible, {}, unresolvable)


class Waivers:
    """Holds the extender's filter let go because kube-scheduler itself ruled the held node
    out (the node's pod limit, a taint, an affinity rule): with ``percentageOfNodesToScore:
    100`` (manifests/charts/mipart/templates/scheduler.yaml) the scheduler sends the extender
    every node its own filters pass, so a held node missing from the list cannot take the pod, and
    waiting for the hold to expire would only delay it. Bind then accepts another node for
    that pod and that hold. In memory only and bounded: a restarted extender refuses one bind,
    and the scheduler's retry filters (and waives) again."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._waived: dict[str, PlannedPartitions] = {}
        self._lock = threading.Lock()

    def waive(self, pod_uid: str, hold: PlannedPartitions) -> None:
        with self._lock:
            self._waived.pop(pod_uid, None)
            if len(self._waived) >= self._capacity:
                # Dicts keep insertion order: the oldest waiver goes first.
                del self._waived[next(iter(self._waived))]
            self._waived[pod_uid] = hold

    def waived(self, pod_uid: str, hold: PlannedPartitions) -> bool:
        """Whether filter let this very hold of this pod go."""
        return self._waived.get(pod_uid) == hold
