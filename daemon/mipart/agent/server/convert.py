"""NodeStatus (domain + manager) -> NodeService messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mipart.agent.partitions.manager import NodeStatus
from mipart.agent.partitions.operations import GpuPhase, OperationEvent
from mipart.api.v1 import node_pb2 as pb
from mipart.geometry import GpuInventory, GpuProcess, NodeInventory, PartitionInventory
from mipart.placement import Allocation


@dataclass(frozen=True, slots=True)
class PodsOnNode:
    """What the daemon knows of the pods that hold this node's partitions, for one reading of
    the hardware: their allocations and, where processes can be mapped to pods, the VRAM each
    pod's processes use on each partition."""

    allocations: tuple[Allocation, ...] = ()
    # (pod UID, partition id) -> bytes; None when processes cannot be mapped to pods at all.
    used_bytes: Mapping[tuple[str, str], int] | None = None


# The pods for an inventory (main.py builds one from the pod cache when the daemon runs with
# Kubernetes); without one, partitions show no pods.
PodsProvider = Callable[[NodeInventory], PodsOnNode]
NO_PODS = PodsOnNode()


def node_message(status: NodeStatus, node_name: str, pods: PodsOnNode = NO_PODS) -> pb.Node:
    node = pb.Node(
        node_name=node_name,
        hardware_error=status.hardware_error or "",
        recovering=status.recovering,
    )
    node.observed_at.GetCurrentTime()
    if status.pending_memory is not None:
        node.pending_memory_partition = status.pending_memory.value
    if status.desired is not None:
        node.desired.memory_partition = status.desired.memory.value
        for index, mode in status.desired.compute.items():
            node.desired.compute_partitions[index] = mode.value
    op = status.operation
    last = None if op is None else op.last
    if op is not None and last is not None and not op.done:
        node.operation.CopyFrom(
            pb.Operation(
                operation_id=op.id,
                kind=op.kind,
                target=op.target,
                phase=last.phase.value,
                message=last.message,
                progress=last.progress,
            )
        )
    inventory = status.inventory
    if inventory is None:
        return node
    node.memory_partition = inventory.memory_mode.value
    node.memory_partition_caps.extend(sorted(m.value for m in inventory.memory_caps))
    for gpu in inventory.gpus:
        node.gpus.append(
            gpu_message(
                gpu,
                phase=status.phases.get(gpu.index, GpuPhase.READY),
                drained=gpu.index in status.drained,
                failure=status.failures.get(gpu.index, ""),
                pods=pods,
            )
        )
    return node


def gpu_message(
    gpu: GpuInventory,
    *,
    phase: GpuPhase,
    drained: bool,
    failure: str,
    pods: PodsOnNode = NO_PODS,
) -> pb.Gpu:
    msg = pb.Gpu(
        index=gpu.index,
        bdf=gpu.bdf,
        uuid=gpu.uuid,
        market_name=gpu.market_name,
        compute_partition=gpu.compute_mode.value,
        memory_partition=gpu.memory_mode.value,
        phase=phase.value,
        failure=failure,
        drained=drained,
        partitions=[_partition(p, pods) for p in gpu.partitions],
        memory_bytes=sum(p.geometry.memory_bytes for p in gpu.partitions),
        memory_used_bytes=sum(p.memory_used_bytes for p in gpu.partitions),
    )
    if gpu.temperature_c is not None:
        msg.temperature_c = gpu.temperature_c
    if gpu.power_w is not None:
        msg.power_w = gpu.power_w
    return msg


def _partition(p: PartitionInventory, pods: PodsOnNode) -> pb.Partition:
    g = p.geometry
    msg = pb.Partition(
        id=g.id,
        index=g.index,
        compute_partition=g.compute_mode.value,
        xcds=list(g.xcds),
        compute_units=g.compute_units,
        memory_bytes=g.memory_bytes,
        memory_used_bytes=p.memory_used_bytes,
        memory_pool=g.memory_pool,
        bdf=p.bdf,
        uuid=p.uuid,
        render_minor=p.render_minor,
        processes=[_process(x) for x in p.processes],
        allocations=_allocations(g.id, pods),
    )
    if p.activity_percent is not None:
        msg.activity_percent = p.activity_percent
    return msg


def _allocations(partition_id: str, pods: PodsOnNode) -> list[pb.PartitionAllocation]:
    """The pods holding ``partition_id``, by pod name."""
    entries = []
    for a in sorted(pods.allocations, key=lambda a: (a.pod, a.pod_uid)):
        if partition_id not in a.partition_ids:
            continue
        entry = pb.PartitionAllocation(
            pod=a.pod,
            pod_uid=a.pod_uid,
            memory_limit_bytes=a.memory_bytes,
            sharing=a.sharing.value,
        )
        if pods.used_bytes is not None:
            entry.memory_used_bytes = pods.used_bytes.get((a.pod_uid, partition_id), 0)
        entries.append(entry)
    return entries


def _process(p: GpuProcess) -> pb.GpuProcess:
    return pb.GpuProcess(
        pid=p.pid, name=p.name, vram_bytes=p.vram_bytes, partition_id=p.partition_id
    )


def event_message(event: OperationEvent, kind: str, target: str) -> pb.OperationEvent:
    return pb.OperationEvent(
        operation_id=event.operation_id,
        kind=kind,
        target=target,
        phase=event.phase.value,
        message=event.message,
        progress=event.progress,
        gpu_indices=list(event.gpus),
        dry_run=event.dry_run,
        hardware_status=event.hardware_status or "",
    )
