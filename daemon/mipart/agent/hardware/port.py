"""What the partition manager needs from the hardware, whatever drives it."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from mipart.geometry import ComputeMode, MemoryMode, NodeInventory


class HardwareStatus(StrEnum):
    """The amdsmi statuses a partition change can end with, named as amdsmi names them."""

    BUSY = "BUSY"
    SETTING_UNAVAILABLE = "SETTING_UNAVAILABLE"
    AMDGPU_RESTART_ERR = "AMDGPU_RESTART_ERR"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    NO_PERM = "NO_PERM"
    INVAL = "INVAL"
    OTHER = "OTHER"


class HardwareError(Exception):
    def __init__(self, status: HardwareStatus, message: str) -> None:
        super().__init__(f"{message} (amdsmi status {status.value})")
        self.status = status


class GpuHardware(Protocol):
    def inventory(self) -> NodeInventory:
        """Read every GPU, partition and process as the hardware reports them now."""
        ...

    def set_compute_mode(self, gpu: int, mode: ComputeMode) -> None:
        """Switch one GPU's compute mode; raises HardwareError (BUSY, SETTING_UNAVAILABLE...)."""
        ...

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """Request a node-wide memory mode; it takes effect at the next driver reload."""
        ...

    def reload_driver(self) -> None:
        """Reload the driver: applies a requested memory mode and resets compute modes."""
        ...

    def close(self) -> None: ...
