"""What a node's GPUs are and how they are used right now, in the domain's words.

The daemon builds these from amdsmi; everything downstream (gRPC, GPUNode status, the
placement engine) reads them. Memory figures are bytes, temperatures °C, power watts.
"""

from __future__ import annotations

from dataclasses import dataclass

from mipart.geometry._partitions import ComputeMode, MemoryMode, PartitionGeometry


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    name: str
    vram_bytes: int
    partition_id: str


@dataclass(frozen=True, slots=True)
class PartitionInventory:
    geometry: PartitionGeometry
    bdf: str
    uuid: str
    render_minor: int
    memory_used_bytes: int
    activity_percent: int | None
    processes: tuple[GpuProcess, ...]

    @property
    def id(self) -> str:
        return self.geometry.id


@dataclass(frozen=True, slots=True)
class GpuInventory:
    index: int
    bdf: str
    uuid: str
    market_name: str
    compute_mode: ComputeMode
    memory_mode: MemoryMode
    partitions: tuple[PartitionInventory, ...]
    temperature_c: float | None
    power_w: float | None

    @property
    def processes(self) -> tuple[GpuProcess, ...]:
        return tuple(p for part in self.partitions for p in part.processes)


@dataclass(frozen=True, slots=True)
class NodeInventory:
    memory_mode: MemoryMode
    memory_caps: frozenset[MemoryMode]
    gpus: tuple[GpuInventory, ...]

    def gpu(self, index: int) -> GpuInventory:
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise KeyError(index)

    @property
    def processes(self) -> tuple[GpuProcess, ...]:
        return tuple(p for gpu in self.gpus for p in gpu.processes)


def describe_processes(processes: tuple[GpuProcess, ...], limit: int = 5) -> str:
    """``vllm (pid 4242, 10.0 GiB on gpu2-spx-0), ...`` for error messages."""
    shown = [
        f"{p.name} (pid {p.pid}, {p.vram_bytes / 2**30:.1f} GiB on {p.partition_id})"
        for p in processes[:limit]
    ]
    more = len(processes) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
