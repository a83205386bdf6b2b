"""NodeStatus -> the GPUNode status body (the CRD:
manifests/charts/mipart/crds/gpunodes.mipart.io.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mipart.agent.partitions.desired import Condition
from mipart.agent.partitions.manager import NodeStatus
from mipart.agent.partitions.operations import GpuPhase
from mipart.geometry import GpuInventory


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gpunode_status(
    status: NodeStatus,
    *,
    allocated_bytes: int,
    previous_conditions: list[dict[str, Any]],
    observed_generation: int,
    extra_conditions: tuple[Condition, ...] = (),
) -> dict[str, Any]:
    inventory = status.inventory
    ready, reason, message = _readiness(status)
    conditions = [_condition("Ready", ready, reason, message, previous_conditions)]
    conditions += [
        _condition(c.type, c.ok, c.reason, c.message, previous_conditions) for c in extra_conditions
    ]
    body: dict[str, Any] = {
        "observedGeneration": observed_generation,
        "heartbeatTime": now_rfc3339(),
        "conditions": conditions,
    }
    if inventory is None:
        return body
    total = sum(p.geometry.memory_bytes for g in inventory.gpus for p in g.partitions)
    body.update(
        memoryPartition=inventory.memory_mode.value,
        # What the node could switch to: the re-partition planner must not ask for more.
        memoryPartitionCaps=sorted(m.value for m in inventory.memory_caps),
        gpuCount=len(inventory.gpus),
        partitionCount=sum(len(g.partitions) for g in inventory.gpus),
        freeMemory=_free_quantity(max(total - allocated_bytes, 0)),
        gpus=[_gpu(g, status) for g in inventory.gpus],
    )
    return body


def _gpu(gpu: GpuInventory, status: NodeStatus) -> dict[str, Any]:
    phase = status.phases.get(gpu.index, GpuPhase.READY)
    return {
        "index": gpu.index,
        "computePartition": gpu.compute_mode.value,
        "memoryPartition": gpu.memory_mode.value,
        # Only a Ready GPU takes new allocations; one mid-change is not Unhealthy, but it is
        # not placeable either, which the extender reads from `phase`.
        "health": "Unhealthy" if phase is GpuPhase.FAILED else "Healthy",
        "phase": phase.value,
        "drained": gpu.index in status.drained,
        "partitions": [
            {
                "id": p.geometry.id,
                "computeUnits": p.geometry.compute_units,
                "memoryBytes": p.geometry.memory_bytes,
                "xcds": list(p.geometry.xcds),
                "memoryPool": int(p.geometry.memory_pool.rsplit("pool", 1)[1]),
            }
            for p in gpu.partitions
        ],
    }


def _readiness(status: NodeStatus) -> tuple[bool, str, str]:
    if status.inventory is None or status.hardware_error:
        return False, "HardwareUnreadable", status.hardware_error or "no GPU read yet"
    if status.recovering:
        return False, "Recovering", "finishing an interrupted change or restoring the layout"
    return True, "DaemonReady", f"{len(status.inventory.gpus)} GPUs read through amdsmi"


def _condition(
    kind: str, ok: bool, reason: str, message: str, previous: list[dict[str, Any]]
) -> dict[str, Any]:
    value = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    # lastTransitionTime moves only when the status flips, as metav1.Condition defines it.
    since = before["lastTransitionTime"] if before and before.get("status") == value else None
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now_rfc3339(),
    }


def _free_quantity(free: int) -> str:
    """Whole GiB, rounded down: the unit users size models in, and a valid quantity."""
    return f"{free // 2**30}Gi" if free >= 2**30 else f"{free // 2**20}Mi"
