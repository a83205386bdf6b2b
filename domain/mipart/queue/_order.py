"""The QoS queue: which gated pods to release to the scheduler now, and in which order.

Order: class first (latency, then standard, then batch), then arrival (FIFO). A pod is
released only when the placement engine finds room for it *after* room is set aside for every
pod already released and not yet bound, so the scheduler is never handed pods that cannot
fit (no thrashing of its unschedulable queue).

Aging: a pod that does not fit yet may be passed by later, smaller pods of its class or a
lower one (backfill), but only while it is young. Once it has waited ``bypass_after_s``, nothing
behind it is released until it fits: the room freed by finishing pods then accumulates for it
instead of being taken by a stream of small ones. Higher classes still go first.

Holds: a pod the re-partition planner counted on given partitions (``QueuedPod.held``) has its
room set aside on exactly those, released or not yet, and is released only if they are free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from mipart.geometry import ComputeMode
from mipart.placement import (
    QOS_RANK,
    Allocation,
    ClusterView,
    PartitionRequest,
    PlacementConflict,
    QosClass,
    allocation_for,
    summarize_rejections,
)

CLASS_ORDER = tuple(QosClass)
# Hypothetical allocations carry this prefix, so they can never clash with a pod's UID.
_HYPOTHETICAL = "queue:"


@dataclass(frozen=True, slots=True)
class HeldPartitions:
    """The partitions of one node a pod is held to: where the re-partition planner counted
    it (docs/queue.md#holds)."""

    node: str
    partition_ids: tuple[str, ...]


class Counted(Protocol):
    """Where a plan counted a pod (the planner's Promise is one)."""

    @property
    def node(self) -> str: ...

    @property
    def partition_ids(self) -> tuple[str, ...]: ...

    @property
    def compute_mode(self) -> ComputeMode: ...


@dataclass(frozen=True, slots=True)
class QueuedPod:
    key: str  # namespace/name
    uid: str
    request: PartitionRequest
    created: float  # seconds since the epoch: the pod's creation timestamp
    held: HeldPartitions | None = None  # its room is set aside there, and only there

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
    # Each with the room set aside for it: where the scheduler most likely puts it, or the
    # partitions it is held to.
    released: tuple[tuple[QueuedPod, Allocation], ...] = ()
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
    queued: Iterable[QueuedPod], admitted: Mapping[str, Counted | ComputeMode]
) -> tuple[list[QueuedPod], list[QueuedPod]]:
    """Follow the re-partition planner's admissions (pod UID -> where it counted the pod, or
    only the compute mode): an admitted pod is held to those partitions, and one of mode
    "any" to that mode, so it does not take the partition the plan keeps for another (an 8B
    replica on the idle SPX GPU a 70B one waits for, or the CPX partition counted for the
    next 8B replica); one it did not admit waits for its plan. Pods that asked for a mode, and
    latency pods (which may preempt instead), are not held back. Returns (eligible, held
    back)."""
    eligible: list[QueuedPod] = []
    held_back: list[QueuedPod] = []
    for found in queued:
        pod, counted = found, admitted.get(found.uid)
        mode: ComputeMode | None
        if counted is None or isinstance(counted, ComputeMode):
            mode = counted
        else:
            mode = counted.compute_mode
            pod = replace(pod, held=HeldPartitions(counted.node, tuple(counted.partition_ids)))
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

    A pod held to partitions (``QueuedPod.held``), released or not, has its room set aside on
    exactly those, and is released only if they are free; it is not offered to ``preempt``
    (the plan counted it there; the next plan sees what changed).

    ``view`` is used as a scratch pad (the caller holds its lock) and left as it was found.
    """
    reserved: list[str] = []
    try:
        unplaced = [pod.key for pod in in_flight if not _set_aside(view, pod, reserved)]
        released: list[tuple[QueuedPod, Allocation]] = []
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
                room = _set_aside(view, pod, reserved)
                if room is not None:
                    released.append((pod, room))
                    continue
                reason = _no_room(view, pod)
                if now - pod.created >= policy.bypass_after_s:
                    blocked_by = pod
                held = pod.held is not None
                if preempt is not None and pod.qos is QosClass.LATENCY and not asked and not held:
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


def _set_aside(view: ClusterView, pod: QueuedPod, reserved: list[str]) -> Allocation | None:
    """Reserve room for ``pod`` on the partitions it is held to, or else where the scheduler
    would most likely put it (best score); the room, under the pod's own UID, or None."""
    uid = _HYPOTHETICAL + pod.uid
    if pod.held is not None:
        room = _held_room(pod, pod.held)
    else:
        best = view.evaluate(pod.request).best()
        if best is None:
            return None
        room = allocation_for(best, pod.request, pod=pod.key, pod_uid=pod.uid)
    try:
        view.reserve(replace(room, pod_uid=uid))
    except PlacementConflict:
        return None
    reserved.append(uid)
    return room


def _held_room(pod: QueuedPod, held: HeldPartitions) -> Allocation:
    return Allocation(
        pod=pod.key,
        pod_uid=pod.uid,
        node=held.node,
        partition_ids=held.partition_ids,
        memory_bytes=pod.request.memory_bytes,
        sharing=pod.request.sharing,
    )


def _no_room(view: ClusterView, pod: QueuedPod) -> str:
    if pod.held is not None:
        problem = view.conflict(replace(_held_room(pod, pod.held), pod_uid=_HYPOTHETICAL + pod.uid))
        where = f"{pod.held.node} {', '.join(pod.held.partition_ids)}"
        return f"the partitions the re-partition planner counted it on ({where}): {problem}"
    rejected = view.evaluate(pod.request).rejected
    if not rejected:
        return "no GPUNode known yet"
    return summarize_rejections(rejected)
