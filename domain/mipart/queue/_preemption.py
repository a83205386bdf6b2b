"""Preemption for the queue: a latency pod that fits nowhere picks lower-class victims.

Batch pods are evicted before standard ones: the lowest class whose pods alone make room is
the one chosen from. Among those, the victims are the smallest set on one node (fewest pods,
then least memory: the same ``victims_for`` that answers kube-scheduler's preempt verb in the
extender, so both give the same answer for the same node). Over nodes, the node whose set is
smallest wins.

The room is held by the victims themselves: their allocations count until their pods are
gone, so nothing else is placed there meanwhile, and when they are gone the latency pod is
first in the queue. A latency pod that would fit once the pods already leaving have left
waits for them instead of preempting more: that is what makes a restarted controller, which
remembers nothing, not evict twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from mipart.placement import QOS_RANK, Allocation, ClusterView, QosClass, victims_for
from mipart.queue._order import QueuedPod


@dataclass(frozen=True, slots=True)
class Preemption:
    pod: QueuedPod
    node: str
    victims: tuple[Allocation, ...]

    @property
    def description(self) -> str:
        names = ", ".join(v.pod for v in self.victims)
        return f"evicting {len(self.victims)} lower-class pod(s) on {self.node}: {names}"


@dataclass(frozen=True, slots=True)
class Awaiting:
    """Pods already leaving will make room: wait for them rather than evict more."""

    leaving: int

    @property
    def description(self) -> str:
        return f"waiting for {self.leaving} pod(s) to leave"


def plan_preemption(
    view: ClusterView,
    pod: QueuedPod,
    *,
    class_of: Mapping[str, QosClass],
    leaving: Collection[str],
    protected: Collection[str] = (),
) -> Preemption | Awaiting | str:
    """Victims for ``pod`` (which fits nowhere now), Awaiting if pods already leaving will
    make room, or why there are none.

    ``class_of``: pod UID -> QoS class of each evictable allocation's pod (others are kept);
    ``leaving``: UIDs of pods already going (evicted, deleted); ``protected``: UIDs that must
    not be chosen (a PodDisruptionBudget refused their eviction).
    """
    going = [a for uid in leaving if (a := view.allocation(uid)) is not None]
    if going and _fits_without(view, pod, going):
        return Awaiting(len(going))
    rank = QOS_RANK[pod.qos]
    # The lowest classes first: batch pods go before standard ones whenever evicting batch
    # pods alone makes room, however many fewer standard pods it would take.
    for lowest in sorted(
        {QOS_RANK[q] for q in class_of.values() if QOS_RANK[q] > rank}, reverse=True
    ):
        best = _best_preemption(
            view, pod, class_of=class_of, leaving=leaving, protected=protected, lowest=lowest
        )
        if best is not None:
            return best
    return "no set of lower-class pods whose eviction would make room"


def _best_preemption(
    view: ClusterView,
    pod: QueuedPod,
    *,
    class_of: Mapping[str, QosClass],
    leaving: Collection[str],
    protected: Collection[str],
    lowest: int,
) -> Preemption | None:
    """The cheapest victims over all nodes among pods of rank ``lowest`` or lower (larger)."""
    best: Preemption | None = None
    for node in sorted(view.node_names):
        capacity = view.capacity(node)
        if capacity is None:
            continue
        staying = [a for a in view.allocations(node) if a.pod_uid not in leaving]
        # Only pods the caller named a class for: room set aside for pods not bound yet (or
        # any other reservation) is nobody to evict.
        candidates = [
            a
            for a in staying
            if a.pod_uid in class_of
            and QOS_RANK[class_of[a.pod_uid]] >= lowest
            and a.pod_uid not in protected
        ]
        if not candidates:
            continue
        victims = victims_for(pod.request, capacity, staying, candidates)
        if not victims:  # None: no eviction helps; (): it fits, which the caller ruled out
            continue
        found = Preemption(pod, node, victims)
        if best is None or _cost(found) < _cost(best):
            best = found
    return best


def _cost(preemption: Preemption) -> tuple[int, int]:
    return len(preemption.victims), sum(v.total_bytes for v in preemption.victims)


def _fits_without(view: ClusterView, pod: QueuedPod, going: list[Allocation]) -> bool:
    for allocation in going:
        view.remove_allocation(allocation.pod_uid)
    try:
        return bool(view.evaluate(pod.request).feasible)
    finally:
        for allocation in going:
            view.add_allocation(allocation)
