"""NodeService: thin translation between gRPC and the PartitionManager."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
import structlog

from mipart.agent.partitions.errors import Conflict, InvalidRequest, RequestError, Unavailable
from mipart.agent.partitions.manager import NodeStatus, PartitionManager
from mipart.agent.partitions.operations import GpuPhase, Operation
from mipart.agent.server.convert import (
    NO_PODS,
    PodsOnNode,
    PodsProvider,
    event_message,
    gpu_message,
    node_message,
)
from mipart.api.v1 import node_pb2 as pb
from mipart.api.v1 import node_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)
T = TypeVar("T")

_CODES: dict[type[RequestError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
# How often a Watch stream wakes to notice a client that went away.
_WATCH_POLL_S = 1.0


class NodeService(pb_grpc.NodeServiceServicer):
    def __init__(
        self, manager: PartitionManager, node_name: str, pods: PodsProvider | None = None
    ) -> None:
        self._manager = manager
        self._node_name = node_name
        self._pods = pods

    def set_pods_provider(self, pods: PodsProvider) -> None:
        """Show which pods hold each partition (the daemon's pod cache, with Kubernetes)."""
        self._pods = pods

    def GetNode(self, request: pb.GetNodeRequest, context: grpc.ServicerContext) -> pb.Node:
        # Read the hardware now, as amd-smi does: a poll interval of staleness would hide the
        # process that was just started. (During a reload the last snapshot is served.)
        return self._node(self._manager.refresh())

    def SetComputePartition(
        self, request: pb.SetComputePartitionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.OperationEvent]:
        op = _call(
            context,
            lambda: self._manager.set_compute_mode(
                request.gpu_index, request.compute_partition, dry_run=request.dry_run
            ),
        )
        return _stream(op)

    def SetMemoryPartition(
        self, request: pb.SetMemoryPartitionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.OperationEvent]:
        op = _call(
            context,
            lambda: self._manager.set_memory_mode(
                request.memory_partition, dry_run=request.dry_run
            ),
        )
        return _stream(op)

    def DrainGpu(self, request: pb.DrainGpuRequest, context: grpc.ServicerContext) -> pb.Gpu:
        return self._drain(request.gpu_index, True, context)

    def UndrainGpu(self, request: pb.DrainGpuRequest, context: grpc.ServicerContext) -> pb.Gpu:
        return self._drain(request.gpu_index, False, context)

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.Node]:
        status = self._manager.status()
        yield self._node(status)
        while context.is_active():
            newer = self._manager.wait_for_change(status.version, _WATCH_POLL_S)
            if newer.version != status.version:
                status = newer
                yield self._node(status)

    def _drain(self, gpu: int, drained: bool, context: grpc.ServicerContext) -> pb.Gpu:
        status = _call(context, lambda: self._manager.drain(gpu, drained))
        assert status.inventory is not None
        return gpu_message(
            status.inventory.gpu(gpu),
            phase=status.phases.get(gpu, GpuPhase.READY),
            drained=gpu in status.drained,
            failure=status.failures.get(gpu, ""),
            pods=self._pods_on(status),
        )

    def _node(self, status: NodeStatus) -> pb.Node:
        return node_message(status, self._node_name, self._pods_on(status))

    def _pods_on(self, status: NodeStatus) -> PodsOnNode:
        if self._pods is None or status.inventory is None:
            return NO_PODS
        try:
            return self._pods(status.inventory)
        except Exception:  # the pods are extra: a failure to read them never fails the call
            log.exception("pods.read_failed")
            return NO_PODS


def _call(context: grpc.ServicerContext, action: Callable[[], T]) -> T:
    try:
        return action()
    except RequestError as err:
        _abort(context, err)


def _abort(context: grpc.ServicerContext, err: RequestError) -> NoReturn:
    code = _CODES.get(type(err), grpc.StatusCode.FAILED_PRECONDITION)
    log.info("request.refused", code=code.name, reason=str(err))
    context.abort(code, str(err))
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


def _stream(op: Operation) -> Iterator[pb.OperationEvent]:
    for event in op.events():
        yield event_message(event, op.kind, op.target)
