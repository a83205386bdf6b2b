"""MI300X partition geometry: compute and memory (NPS) modes, what each partition gets,
node layouts and the steps between two of them, a node's inventory, and byte quantities.

The base of the domain: it imports nothing else of mipart.
"""

from __future__ import annotations

from mipart.geometry._inventory import (
    GpuInventory,
    GpuProcess,
    NodeInventory,
    PartitionInventory,
    describe_processes,
)
from mipart.geometry._layout import (
    ComputeStep,
    MemoryStep,
    NodeLayout,
    Step,
    check_memory_change,
    layout_steps,
)
from mipart.geometry._partitions import (
    CUS_PER_XCD,
    GPU_MEMORY_BYTES,
    XCDS_PER_GPU,
    ComputeMode,
    InvalidLayout,
    MemoryMode,
    PartitionGeometry,
    auto_compute_mode,
    check_combination,
    gpu_of_partition_id,
    is_compatible,
    memory_pool_id,
    parse_compute_mode,
    parse_memory_mode,
    partition_id,
    partitions_of,
    valid_combinations,
)
from mipart.geometry._quantity import (
    Rounding,
    format_bytes,
    parse_bytes,
)

__all__ = [
    "CUS_PER_XCD",
    "GPU_MEMORY_BYTES",
    "XCDS_PER_GPU",
    "ComputeMode",
    "ComputeStep",
    "GpuInventory",
    "GpuProcess",
    "InvalidLayout",
    "MemoryMode",
    "MemoryStep",
    "NodeInventory",
    "NodeLayout",
    "PartitionGeometry",
    "PartitionInventory",
    "Rounding",
    "Step",
    "auto_compute_mode",
    "check_combination",
    "check_memory_change",
    "describe_processes",
    "format_bytes",
    "gpu_of_partition_id",
    "is_compatible",
    "layout_steps",
    "memory_pool_id",
    "parse_bytes",
    "parse_compute_mode",
    "parse_memory_mode",
    "partition_id",
    "partitions_of",
    "valid_combinations",
]
