"""The DevicePlugin service the kubelet calls (v1beta1)."""

# The servicer methods carry the RPC names.
# ruff: noqa: N802

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import structlog

from mipart.agent.deviceplugin import cdi
from mipart.agent.deviceplugin.allocations import AllocationMissing, Allocations
from mipart.agent.deviceplugin.launchers import LauncherSockets, key_of
from mipart.agent.deviceplugin.podresources import PodResources
from mipart.agent.deviceplugin.slots import HEALTHY, SLOT_PREFIX, UNHEALTHY, SlotList, Slots
from mipart.geometry import NodeInventory
from mipart.kubelet.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

log = structlog.get_logger(__name__)

# How often an idle ListAndWatch stream wakes to notice that the plugin is stopping.
_STREAM_WAKE_S = 1.0


class DevicePluginService(api_pb2_grpc.DevicePluginServicer):
    def __init__(
        self,
        slots: Slots,
        pod_resources: PodResources,
        allocations: Allocations,
        inventory: Callable[[], NodeInventory | None],
        cdi_dir: Path,
        *,
        launchers: LauncherSockets | None = None,
    ) -> None:
        self._slots = slots
        self._pod_resources = pod_resources
        self._allocations = allocations
        self._inventory = inventory
        self._cdi_dir = cdi_dir
        self._launchers = launchers

    def GetDevicePluginOptions(self, request: Any, context: Any) -> api_pb2.DevicePluginOptions:
        return options()

    def ListAndWatch(self, request: Any, context: Any) -> Iterator[api_pb2.ListAndWatchResponse]:
        current = self._slots.current()
        yield _devices(current)
        # Never return while serving: the kubelet marks every device unhealthy when the
        # stream ends. It ends when the kubelet goes away or the plugin stops.
        while context.is_active() and not self._slots.closed:
            newer = self._slots.wait_newer(current.version, _STREAM_WAKE_S)
            if newer is not None:
                current = newer
                yield _devices(current)

    def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: Any
    ) -> api_pb2.PreferredAllocationResponse:
        # Slots are interchangeable, so any choice is as good: keep what must be kept, fill up
        # in the kubelet's order.
        responses = []
        for req in request.container_requests:
            chosen = list(dict.fromkeys(req.must_include_deviceIDs))
            for device in req.available_deviceIDs:
                if len(chosen) >= req.allocation_size:
                    break
                if device not in chosen:
                    chosen.append(device)
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api_pb2.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request: api_pb2.AllocateRequest, context: Any) -> api_pb2.AllocateResponse:
        # Allocate does not say which pod it is for, so it answers only with an indirection
        # that PreStartContainer fills in once the kubelet has recorded the holder.
        known = set(self._slots.current().ids())
        responses = []
        for req in request.container_requests:
            unknown = [d for d in req.devices_ids if d not in known]
            if unknown:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"not {SLOT_PREFIX}<n> devices of this plugin: {', '.join(unknown)}",
                )
            responses.append(
                api_pb2.ContainerAllocateResponse(
                    cdi_devices=[
                        api_pb2.CDIDevice(name=cdi.device_name(d)) for d in req.devices_ids
                    ]
                )
            )
        return api_pb2.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: Any
    ) -> api_pb2.PreStartContainerResponse:
        slots = list(request.devices_ids)
        try:
            holder = self._pod_resources.holder_of(slots)
        except grpc.RpcError as err:
            _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"pod-resources API unavailable, cannot tell who holds {', '.join(slots)}: "
                f"{err.code().name} {err.details()}",
            )
        if holder is None:
            # Fail rather than guess: the kubelet retries the container start.
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no container holds {', '.join(slots)} in the kubelet's pod-resources list",
            )
        try:
            allocation = self._allocations.of(holder.namespace, holder.pod)
        except AllocationMissing as err:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"{', '.join(slots)}: {err}")
        inventory = self._inventory()
        if inventory is None:
            _abort(context, grpc.StatusCode.UNAVAILABLE, "the node's GPUs have not been read yet")
        try:
            socket = None
            if self._launchers is not None:
                socket = self._launchers.open(
                    key_of(holder.namespace, holder.pod),
                    holder.key,
                    frozenset(cdi.memory_pools(allocation, inventory)),
                )
            # Every slot of the container carries the whole allocation: the edits are
            # identical, so the runtime merging them changes nothing, and no slot is empty.
            for slot in slots:
                cdi.write(self._cdi_dir, slot, cdi.spec(slot, allocation, inventory, socket))
        except cdi.UnknownPartition as err:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"pod {holder.key}: {err}")
        log.info(
            "deviceplugin.prestart",
            pod=holder.key,
            container=holder.container,
            slots=slots,
            partitions=list(allocation.partition_ids),
        )
        return api_pb2.PreStartContainerResponse()


def options() -> api_pb2.DevicePluginOptions:
    return api_pb2.DevicePluginOptions(
        pre_start_required=True, get_preferred_allocation_available=False
    )


def _devices(slots: SlotList) -> api_pb2.ListAndWatchResponse:
    health = HEALTHY if slots.healthy else UNHEALTHY
    return api_pb2.ListAndWatchResponse(
        devices=[api_pb2.Device(ID=i, health=health) for i in slots.ids()]
    )


def _abort(context: Any, code: Any, message: str) -> NoReturn:
    """End the call with ``code``; the kubelet logs ``message`` and retries the start."""
    log.warning("deviceplugin.refused", code=code.name, message=message)
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # for type checkers: abort never returns
