"""The QoS queue: which gated pods to release to the scheduler now, and in which order.

Order: class first (latency, then standard, then batch), then arrival (FIFO). A pod is
released only when the placement engine finds room for it *after* room is set aside for every
pod already released and not yet bound, so the scheduler is never handed pods that cannot
fit (no thrashing of its unschedulable queue).

Aging: a pod that does not fit yet may be passed by later, smaller pods of its class or a
lower one (backfill), but only while it is young. Once it has waited ``bypass_after_s``, nothing
behind it is released until it fits: the room freed by finishing pods then accumulates for it
instead of being taken by a stream of small ones. Higher classes still go first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from mipart.geometry import ComputeMode
from mipart.placement import (
    QOS_RANK,
    ClusterView,
    PartitionRequest,
    Placement,
    PlacementConflict,
    QosClass,
    allocation_for,
    summarize_rejections,
)

CLASS_ORDER = tuple(QosClass)
# Hypothetical allocations carry this prefix, so they can never clash with a pod's UID.
_HYPOTHETICAL = "queue:"


@dataclass(frozen=True, slots=True)
class QueuedPod:
    key: str  # namespace/name
    uid: str
    request: PartitionRequest
    created: float  # seconds since the epoch: the pod's creation timestamp

    @property
    def qos(self) -> QosClass:
        return self.request.qos


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    bypass_after_s: float = 300.0


DEFAULT_POLICY = QueuePolicy()


@dataclass(frozen=True, slots=True)
class Waiting:
    pod: QueuedPod
    position: int  # 1-based, over the whole queue
    reason: str  # why it was not released this round


@dataclass(frozen=True, slots=True)
class Round:
    released: tuple[tuple[QueuedPod, Placement], ...] = ()
    waiting: tuple[Waiting, ...] = ()
    # Pods released earlier and still unbound, for which no room could be set aside.
    unplaced_in_flight: tuple[str, ...] = field(default=())
    # What the round's ``preempt`` hook chose for the first latency pod that needed it.
    preemption: object | None = None


# For a latency pod that fits nowhere: (a preemption or None, why it waits, whether pods after
# it must wait too because room is being made for it).
PreemptHook = Callable[[ClusterView, "QueuedPod"], tuple[object | None, str, bool]]


def order(pods: Iterable[QueuedPod]) -> list[QueuedPod]:
    return sorted(pods, key=lambda p: (QOS_RANK[p.qos], p.created, p.key))


def hold_to_plan(
    queued: Iterable[QueuedPod], modes: Mapping[str, ComputeMode]
) -> tuple[list[QueuedPod], list[QueuedPod]]:
    """Follow the re-partition planner's admissions (pod UID -> the compute mode it counted
    the pod on): an admitted pod of mode "any" is held to that mode, so it does not take the
    partition the plan keeps for another (an 8B replica on the idle SPX GPU a 70B one waits
    for); one it did not admit waits for its plan. Pods that asked for a mode, and latency
    pods (which may preempt instead), are not held back. Returns (eligible, held back)."""
    eligible: list[QueuedPod] = []
    held_back: list[QueuedPod] = []
    for pod in queued:
        mode = modes.get(pod.uid)
        if pod.request.compute_mode is not None:
            eligible.append(pod)
        elif mode is not None:
            eligible.append(replace(pod, request=replace(pod.request, compute_mode=mode)))
        elif pod.qos is QosClass.LATENCY:
            eligible.append(pod)
        else:
            held_back.append(pod)
    return eligible, held_back


def plan_round(
    view: ClusterView,
    queued: Iterable[QueuedPod],
    in_flight: Sequence[QueuedPod],
    *,
    now: float,
    budget: int,
    policy: QueuePolicy = DEFAULT_POLICY,
    preempt: PreemptHook | None = None,
) -> Round:
    """Decide one round of releases: at most ``budget`` pods, in queue order.

    ``preempt`` is asked about the first latency pod that fits nowhere, with the room of
    every pod released or set aside so far still reserved; while room is made for it, nothing
    after it is released (no backfill into the room it waits for).

    ``view`` is used as a scratch pad (the caller holds its lock) and left as it was found.
    """
    reserved: list[str] = []
    try:
        unplaced = [pod.key for pod in in_flight if not _set_aside(view, pod, reserved)]
        released: list[tuple[QueuedPod, Placement]] = []
        waiting: list[Waiting] = []
        blocked_by: QueuedPod | None = None
        preemption: object | None = None
        asked = False
        for position, pod in enumerate(order(queued), start=1):
            if blocked_by is not None:
                reason = f"behind {blocked_by.key}, which comes first and waits for room"
            elif len(released) >= budget:
                reason = "release rate reached; next round"
            else:
                placement = _set_aside(view, pod, reserved)
                if placement is not None:
                    released.append((pod, placement))
                    continue
                reason = _no_room(view, pod)
                if now - pod.created >= policy.bypass_after_s:
                    blocked_by = pod
                if preempt is not None and pod.qos is QosClass.LATENCY and not asked:
                    asked = True
                    preemption, why, blocks = preempt(view, pod)
                    reason = f"{reason}; {why}"
                    if blocks:
                        blocked_by = pod
            waiting.append(Waiting(pod, position, reason))
        return Round(tuple(released), tuple(waiting), tuple(unplaced), preemption)
    finally:
        for uid in reserved:
            view.remove_allocation(uid)


def _set_aside(view: ClusterView, pod: QueuedPod, reserved: list[str]) -> Placement | None:
    """Reserve room for ``pod`` where the scheduler would most likely put it (best score)."""
    best = view.evaluate(pod.request).best()
    if best is None:
        return None
    uid = _HYPOTHETICAL + pod.uid
    try:
        view.reserve(allocation_for(best, pod.request, pod=pod.key, pod_uid=uid))
    except PlacementConflict:
        return None
    reserved.append(uid)
    return best


def _no_room(view: ClusterView, pod: QueuedPod) -> str:
    rejected = view.evaluate(pod.request).rejected
    if not rejected:
        return "no GPUNode known yet"
    return summarize_rejections(rejected)
