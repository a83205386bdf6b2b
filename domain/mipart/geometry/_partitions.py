"""MI300X partition geometry: compute modes, memory (NPS) modes and what each partition gets.

Facts (docs/facts-mi300x.md, #compute-modes to #memory-per-partition): an MI300X has 8 XCDs
of 38 CUs on 4 AIDs and 196592 MiB of HBM3. A compute mode splits the XCDs evenly into
1/2/4/8 partitions; a memory mode splits the HBM into 1/2/4 NUMA pools. The driver gives every
partition an equal share of its pool, so a partition's memory depends only on the compute mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

XCDS_PER_GPU = 8
CUS_PER_XCD = 38
# What amd-smi reports for an unpartitioned MI300X (196592 MiB, "192 GB").
GPU_MEMORY_BYTES = 196_592 * 1024 * 1024


class ComputeMode(StrEnum):
    """Accelerator (compute) partition modes that an MI300X supports (TPX needs 3 | 8 XCDs)."""

    SPX = "SPX"
    DPX = "DPX"
    QPX = "QPX"
    CPX = "CPX"

    @property
    def partition_count(self) -> int:
        return _PARTITIONS[self]

    @property
    def xcds_per_partition(self) -> int:
        return XCDS_PER_GPU // self.partition_count


class MemoryMode(StrEnum):
    """Memory partition (NUMAs per socket) modes; NPS8 exists in the API but not on MI300X."""

    NPS1 = "NPS1"
    NPS2 = "NPS2"
    NPS4 = "NPS4"

    @property
    def pool_count(self) -> int:
        return int(self.value.removeprefix("NPS"))


_PARTITIONS = {ComputeMode.SPX: 1, ComputeMode.DPX: 2, ComputeMode.QPX: 4, ComputeMode.CPX: 8}

# The driver's table (aqua_vanjaram.c): which memory modes each compute mode may run under.
# Firmware may further restrict memory modes; that is the node's capability set.
_COMPATIBLE: dict[ComputeMode, frozenset[MemoryMode]] = {
    ComputeMode.SPX: frozenset({MemoryMode.NPS1}),
    ComputeMode.DPX: frozenset({MemoryMode.NPS1, MemoryMode.NPS2}),
    ComputeMode.QPX: frozenset({MemoryMode.NPS1, MemoryMode.NPS4}),
    ComputeMode.CPX: frozenset({MemoryMode.NPS1, MemoryMode.NPS4}),
}

# After a driver reload the default AUTO mode picks the compute mode from the NPS count.
_AUTO_COMPUTE = {
    MemoryMode.NPS1: ComputeMode.SPX,
    MemoryMode.NPS2: ComputeMode.DPX,
    MemoryMode.NPS4: ComputeMode.CPX,
}


class InvalidLayout(ValueError):
    """A compute/memory combination the hardware does not accept."""


def parse_compute_mode(value: str, *, field: str = "compute_partition") -> ComputeMode:
    try:
        return ComputeMode(value.strip().upper())
    except ValueError:
        allowed = ", ".join(m.value for m in ComputeMode)
        raise InvalidLayout(
            f"{field}: {value!r} is not a compute mode; allowed: {allowed}"
        ) from None


def parse_memory_mode(value: str, *, field: str = "memory_partition") -> MemoryMode:
    try:
        return MemoryMode(value.strip().upper())
    except ValueError:
        allowed = ", ".join(m.value for m in MemoryMode)
        raise InvalidLayout(
            f"{field}: {value!r} is not a memory mode; allowed: {allowed}"
        ) from None


def is_compatible(
    compute: ComputeMode, memory: MemoryMode, caps: frozenset[MemoryMode] | None = None
) -> bool:
    return memory in _COMPATIBLE[compute] and (caps is None or memory in caps)


def valid_combinations(caps: frozenset[MemoryMode] | None = None) -> list[str]:
    """Every compute+memory pair allowed, e.g. ``["SPX+NPS1", "DPX+NPS1", ...]``."""
    return [
        f"{c.value}+{m.value}" for c in ComputeMode for m in MemoryMode if is_compatible(c, m, caps)
    ]


def check_combination(
    compute: ComputeMode, memory: MemoryMode, caps: frozenset[MemoryMode] | None = None
) -> None:
    """Raise InvalidLayout, naming the valid combinations, unless ``compute`` runs in ``memory``."""
    if caps is not None and memory not in caps:
        raise InvalidLayout(unsupported_memory_mode(memory, caps))
    if not is_compatible(compute, memory, caps):
        raise InvalidLayout(
            f"{compute.value} cannot run with {memory.value}; valid combinations: "
            + ", ".join(valid_combinations(caps))
        )


def unsupported_memory_mode(memory: MemoryMode, caps: frozenset[MemoryMode]) -> str:
    have = ", ".join(sorted(m.value for m in caps))
    return f"memory mode {memory.value} is not supported by this node (supports {have})"


def auto_compute_mode(memory: MemoryMode) -> ComputeMode:
    """The compute mode the driver sets on every GPU after a reload into ``memory``."""
    return _AUTO_COMPUTE[memory]


@dataclass(frozen=True, slots=True)
class PartitionGeometry:
    """One compute partition (XCP) of a GPU, as the hardware carves it."""

    id: str
    gpu_index: int
    index: int
    compute_mode: ComputeMode
    memory_mode: MemoryMode
    xcds: tuple[int, ...]
    compute_units: int
    memory_bytes: int
    memory_pool: str


_GPU_OF_ID = re.compile(r"^gpu(\d+)-")


def partition_id(gpu_index: int, compute: ComputeMode, index: int) -> str:
    """Stable, human-readable partition ID, e.g. ``gpu3-cpx-5``; valid as a kubelet device ID."""
    return f"gpu{gpu_index}-{compute.value.lower()}-{index}"


def gpu_of_partition_id(partition_id: str) -> int | None:
    """The GPU index in an ID made by partition_id (``gpu3-cpx-5``: 3), or None."""
    match = _GPU_OF_ID.match(partition_id)
    return int(match.group(1)) if match else None


def memory_pool_id(gpu_index: int, pool: int) -> str:
    return f"gpu{gpu_index}-pool{pool}"


def partitions_of(
    gpu_index: int, compute: ComputeMode, memory: MemoryMode
) -> list[PartitionGeometry]:
    """The partitions a GPU has in ``compute`` mode under ``memory`` mode, in hardware order."""
    check_combination(compute, memory)
    count = compute.partition_count
    xcds_each = compute.xcds_per_partition
    xcds_per_pool = XCDS_PER_GPU // memory.pool_count
    return [
        PartitionGeometry(
            id=partition_id(gpu_index, compute, p),
            gpu_index=gpu_index,
            index=p,
            compute_mode=compute,
            memory_mode=memory,
            xcds=tuple(range(p * xcds_each, (p + 1) * xcds_each)),
            compute_units=xcds_each * CUS_PER_XCD,
            memory_bytes=GPU_MEMORY_BYTES // count,
            # Valid layouts never have more pools than partitions, so one pool holds the XCDs.
            memory_pool=memory_pool_id(gpu_index, (p * xcds_each) // xcds_per_pool),
        )
        for p in range(count)
    ]
