"""GPUNode objects (as the daemons publish them) -> the placement engine's NodeCapacity."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mipart.geometry import ComputeMode, InvalidLayout, MemoryMode, PartitionGeometry, partitions_of
from mipart.placement import NodeCapacity, PartitionState


def heartbeat_age(gpunode: dict[str, Any], now: datetime) -> float | None:
    beat = (gpunode.get("status") or {}).get("heartbeatTime")
    if not beat:
        return None
    seen = datetime.strptime(beat, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (now - seen).total_seconds()


def ready_of(gpunode: dict[str, Any], *, now: datetime, stale_after_s: float) -> bool:
    """A stale heartbeat or a non-Ready daemon makes the node not ready: its inventory may no
    longer be true, so nothing new goes there."""
    status = gpunode.get("status") or {}
    age = heartbeat_age(gpunode, now)
    ready_condition: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c.get("type") == "Ready"), {}
    )
    return age is not None and age <= stale_after_s and ready_condition.get("status") == "True"


def same_inventory(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two versions of a GPUNode offer the same (heartbeat and metadata aside): most
    updates are a daemon's heartbeat, and rebuilding a node's capacity for each would cost
    O(partitions) per node every few seconds."""
    if old.get("spec") != new.get("spec"):
        return False
    before, after = old.get("status") or {}, new.get("status") or {}
    return before.keys() == after.keys() and all(
        before[k] == after[k] for k in before if k != "heartbeatTime"
    )


def capacity_of(gpunode: dict[str, Any], *, now: datetime, stale_after_s: float) -> NodeCapacity:
    """What the node offers, and whether it is ready (ready_of)."""
    name = gpunode["metadata"]["name"]
    status = gpunode.get("status") or {}
    spec_gpus = (gpunode.get("spec") or {}).get("gpus", [])
    spec_drained = {int(g["index"]) for g in spec_gpus if g.get("drained")}
    ready = ready_of(gpunode, now=now, stale_after_s=stale_after_s)
    try:
        memory = MemoryMode(status.get("memoryPartition", "NPS1"))
    except ValueError:
        return NodeCapacity(name=name, partitions=(), memory_mode=MemoryMode.NPS1, ready=False)
    partitions: list[PartitionState] = []
    drained: set[int] = set(spec_drained)
    for gpu in status.get("gpus", []):
        index = int(gpu["index"])
        if gpu.get("drained"):
            drained.add(index)
        usable = gpu.get("health") == "Healthy" and gpu.get("phase", "Ready") == "Ready"
        partitions.extend(PartitionState(g, healthy=usable) for g in _geometry(gpu, memory))
    return NodeCapacity(
        name=name,
        partitions=tuple(partitions),
        memory_mode=memory,
        drained_gpus=frozenset(drained),
        ready=ready,
    )


def _geometry(gpu: dict[str, Any], memory: MemoryMode) -> list[PartitionGeometry]:
    """The partition model's geometry for the reported mode; the published ids must agree
    (they do unless the daemon and the extender disagree on the model: then use nothing)."""
    try:
        geometry = partitions_of(int(gpu["index"]), ComputeMode(gpu["computePartition"]), memory)
    except (KeyError, ValueError, InvalidLayout):
        return []
    published = [p.get("id") for p in gpu.get("partitions", [])]
    return geometry if published == [g.id for g in geometry] else []
