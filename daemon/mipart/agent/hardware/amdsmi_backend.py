"""GpuHardware over the real ``amdsmi`` package (libamd_smi.so from ROCM_PATH).

This is the only module that imports amdsmi. Handles are cached between calls and thrown
away after any partition change: the library invalidates them, as the hardware does, and
the documented remedy is shut down, init, enumerate again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from mipart.agent.hardware.port import HardwareError, HardwareStatus
from mipart.geometry import (
    ComputeMode,
    GpuInventory,
    GpuProcess,
    MemoryMode,
    NodeInventory,
    PartitionInventory,
    partitions_of,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

_STATUS_BY_CODE = {
    1: HardwareStatus.INVAL,
    2: HardwareStatus.NOT_SUPPORTED,
    10: HardwareStatus.NO_PERM,
    30: HardwareStatus.BUSY,
    54: HardwareStatus.AMDGPU_RESTART_ERR,
    55: HardwareStatus.SETTING_UNAVAILABLE,
}
# Statuses a stale handle can produce; they earn one re-enumeration and a retry.
_STALE_HANDLE_CODES = {1, 31, 32}


class AmdSmiHardware:
    def __init__(self) -> None:
        try:
            import amdsmi  # noqa: PLC0415 - loading the C library is this object's job
        except (ImportError, OSError, AttributeError, KeyError) as err:
            # The package raises KeyError when it found no libamd_smi.so at all.
            raise RuntimeError(
                "cannot load amdsmi/libamd_smi.so: set ROCM_PATH to a ROCm install, or to "
                f"hack/amdsmi-emulator/build for the emulator ({err})"
            ) from err
        self._smi: Any = amdsmi
        self._lock = threading.RLock()
        self._gpus: list[list[Any]] | None = None  # processor handles per socket (GPU)
        self._smi.amdsmi_init()

    def close(self) -> None:
        with self._lock:
            self._gpus = None
            self._smi.amdsmi_shut_down()

    # -- GpuHardware -----------------------------------------------------------------------

    def inventory(self) -> NodeInventory:
        return self._with_handles(self._read_inventory)

    def set_compute_mode(self, gpu: int, mode: ComputeMode) -> None:
        kind = self._smi.AmdSmiComputePartitionType[mode.value]
        # Set on the primary partition of the socket, as AMD's own tooling does.
        self._change(lambda gpus: self._smi.amdsmi_set_gpu_compute_partition(gpus[gpu][0], kind))

    def set_memory_mode(self, mode: MemoryMode) -> None:
        kind = self._smi.AmdSmiMemoryPartitionType[mode.value]
        self._change(lambda gpus: self._smi.amdsmi_set_gpu_memory_partition(gpus[0][0], kind))

    def reload_driver(self) -> None:
        self._change(lambda _gpus: self._smi.amdsmi_gpu_driver_reload())

    # -- internals -------------------------------------------------------------------------

    def _change(self, action: Callable[[list[list[Any]]], None]) -> None:
        with self._lock:
            try:
                self._with_handles(action)
            finally:
                self._forget_handles()

    def _with_handles(self, action: Callable[[list[list[Any]]], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return action(self._handles())
                except self._smi.AmdSmiLibraryException as err:
                    code = err.get_error_code()
                    if attempt == 1 and code in _STALE_HANDLE_CODES:
                        log.debug("amdsmi.reenumerate", status=code)
                        self._forget_handles()
                        continue
                    status = _STATUS_BY_CODE.get(code, HardwareStatus.OTHER)
                    raise HardwareError(status, str(err).strip()) from err
            raise AssertionError("unreachable")  # pragma: no cover

    def _handles(self) -> list[list[Any]]:
        if self._gpus is None:
            self._gpus = [
                self._socket_processors(socket) for socket in self._smi.amdsmi_get_socket_handles()
            ]
        return self._gpus

    def _socket_processors(self, socket: Any) -> list[Any]:
        # amdsmi_get_processor_handles() flattens all sockets; we need them per socket, so
        # call the C entry point per socket as the package itself does.
        import ctypes  # noqa: PLC0415

        wrapper = self._smi.amdsmi_wrapper
        count = ctypes.c_uint32()
        null = ctypes.POINTER(wrapper.amdsmi_processor_handle)()
        self._check(wrapper.amdsmi_get_processor_handles(socket, ctypes.byref(count), null))
        handles = (wrapper.amdsmi_processor_handle * count.value)()
        self._check(wrapper.amdsmi_get_processor_handles(socket, ctypes.byref(count), handles))
        return [wrapper.amdsmi_processor_handle(handles[i]) for i in range(count.value)]

    def _check(self, status: int) -> None:
        if status != 0:
            raise self._smi.AmdSmiLibraryException(status)

    def _forget_handles(self) -> None:
        # Re-initialising drops the library's view of the old partitions.
        self._gpus = None
        self._smi.amdsmi_shut_down()
        self._smi.amdsmi_init()

    def _read_inventory(self, gpus: list[list[Any]]) -> NodeInventory:
        smi = self._smi
        primary = gpus[0][0]
        config = smi.amdsmi_get_gpu_memory_partition_config(primary)
        caps = frozenset(
            MemoryMode(c) for c in config["partition_caps"] if c in MemoryMode.__members__
        )
        memory = MemoryMode(smi.amdsmi_get_gpu_memory_partition(primary))
        return NodeInventory(
            memory_mode=memory,
            memory_caps=caps,
            gpus=tuple(self._read_gpu(i, handles, memory) for i, handles in enumerate(gpus)),
        )

    def _read_gpu(self, index: int, handles: list[Any], memory: MemoryMode) -> GpuInventory:
        smi = self._smi
        primary = handles[0]
        compute = ComputeMode(smi.amdsmi_get_gpu_compute_partition(primary))
        geometry = partitions_of(index, compute, memory)
        if len(geometry) != len(handles):
            raise HardwareError(
                HardwareStatus.OTHER,
                f"gpu {index} reports {compute.value} but has {len(handles)} partitions",
            )
        asic = smi.amdsmi_get_gpu_asic_info(primary)
        return GpuInventory(
            index=index,
            bdf=smi.amdsmi_get_gpu_device_bdf(primary),
            uuid=smi.amdsmi_get_gpu_device_uuid(primary),
            market_name=str(asic["market_name"]),
            compute_mode=compute,
            memory_mode=memory,
            partitions=tuple(
                self._read_partition(h, g) for h, g in zip(handles, geometry, strict=True)
            ),
            # Only the primary partition reports device-wide telemetry on hardware.
            temperature_c=self._optional(
                lambda: smi.amdsmi_get_temp_metric(
                    primary, smi.AmdSmiTemperatureType.HOTSPOT, smi.AmdSmiTemperatureMetric.CURRENT
                )
            ),
            power_w=self._optional(
                lambda: smi.amdsmi_get_power_info(primary)["current_socket_power"]
            ),
        )

    def _read_partition(self, handle: Any, geometry: Any) -> PartitionInventory:
        smi = self._smi
        vram = smi.AmdSmiMemoryType.VRAM
        processes = tuple(
            GpuProcess(
                pid=int(p["pid"]),
                name=str(p["name"]),
                vram_bytes=int(p["memory_usage"]["vram_mem"]),
                partition_id=geometry.id,
            )
            for p in smi.amdsmi_get_gpu_process_list(handle)
        )
        activity = self._optional(lambda: smi.amdsmi_get_gpu_activity(handle)["gfx_activity"])
        return PartitionInventory(
            geometry=geometry,
            bdf=smi.amdsmi_get_gpu_device_bdf(handle),
            uuid=smi.amdsmi_get_gpu_device_uuid(handle),
            render_minor=int(smi.amdsmi_get_gpu_enumeration_info(handle)["drm_render"]),
            memory_used_bytes=int(smi.amdsmi_get_gpu_memory_usage(handle, vram)),
            activity_percent=None if activity is None else int(activity),
            processes=processes,
        )

    def _optional(self, read: Callable[[], Any]) -> Any:
        """Telemetry that a partition may not report ("N/A" or NOT_SUPPORTED) is None."""
        try:
            value = read()
        except self._smi.AmdSmiLibraryException as err:
            if err.get_error_code() == 2:
                return None
            raise
        return None if value == "N/A" else value
