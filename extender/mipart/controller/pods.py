"""Reading the queue from pods: which are gated, which are released and still unbound."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mipart.cluster.annotations import AnnotationError, parse_pod
from mipart.cluster.annotations import qos_of as annotation_qos
from mipart.contract import planned_partitions
from mipart.contract.annotations import PLANNED_MODE, PLANNED_PARTITIONS
from mipart.contract.planned_partitions import PlannedPartitions
from mipart.contract.resources import QUEUE_GATE
from mipart.geometry import ComputeMode
from mipart.kube.informer import object_key
from mipart.kube.objects import FINISHED, allocation_of
from mipart.placement import QosClass
from mipart.queue import HeldPartitions, QueuedPod


def is_gated(pod: dict[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == QUEUE_GATE for g in gates)


def is_in_flight(pod: dict[str, Any]) -> bool:
    """Released (or never queued), not bound yet, not finished or going away: the scheduler
    is about to place it, so room must be set aside for it."""
    spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
    return (
        # Another gate (a Kueue's): the scheduler will not place it yet either.
        not spec.get("schedulingGates")
        and not spec.get("nodeName")
        # Found no room (or another plugin refused it): the scheduler's retries are its own,
        # and setting room aside for it every round would starve the queue.
        and not is_unschedulable(pod)
        and not meta.get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in FINISHED
        and allocation_of(pod) is None
    )


def is_unschedulable(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions
    )


def queued_pod(pod: dict[str, Any], *, now: datetime | None = None) -> QueuedPod | None:
    """The pod as the queue sees it, held to the partitions of its hold if that stands at
    ``now`` (the wall clock by default); None if its annotations no longer parse (the webhook
    checked them at creation, so only a changed rule, or a hold not written by
    mipart-controller, can get here)."""
    meta = pod["metadata"]
    try:
        parsed = parse_pod(meta.get("annotations") or {})
    except AnnotationError:
        return None
    created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    hold = parsed.hold_at(now or datetime.now(UTC))
    held = None if hold is None else HeldPartitions(hold.node, hold.partition_ids)
    return QueuedPod(object_key(pod), meta["uid"], parsed.request, created.timestamp(), held)


def qos_of(pod: dict[str, Any]) -> QosClass:
    return annotation_qos(((pod.get("metadata") or {}).get("annotations")) or {})


def release_patch(
    pod: dict[str, Any],
    planned_mode: ComputeMode | None = None,
    hold: PlannedPartitions | None = None,
) -> list[dict[str, Any]]:
    """A JSON patch that removes the queue gate, and fails if the gates changed meanwhile;
    with ``planned_mode``, it also holds the pod to that compute mode, and with ``hold`` to
    those partitions until the hold expires, in the same update."""
    gates = pod["spec"]["schedulingGates"]
    index = next(i for i, g in enumerate(gates) if g.get("name") == QUEUE_GATE)
    patch: list[dict[str, Any]] = [
        {"op": "test", "path": f"/spec/schedulingGates/{index}/name", "value": QUEUE_GATE},
        {"op": "remove", "path": f"/spec/schedulingGates/{index}"},
    ]
    annotations: list[tuple[str, str]] = []
    if planned_mode is not None:
        annotations.append((PLANNED_MODE, planned_mode.value))
    if hold is not None:
        annotations.append((PLANNED_PARTITIONS, planned_partitions.encode(hold)))
    if annotations and not (pod.get("metadata") or {}).get("annotations"):
        # A queued pod has its mipart.io annotations; a path into a missing map would fail.
        patch.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in annotations:
        patch.append(
            {"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value}
        )
    return patch


def _pointer(key: str) -> str:
    """``key`` as one token of a JSON pointer (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
