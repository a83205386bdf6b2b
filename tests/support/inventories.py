"""Node inventories as the daemon reads them from amdsmi, built by hand for unit tests."""

from __future__ import annotations

from mipart.geometry import (
    ComputeMode,
    GpuInventory,
    GpuProcess,
    MemoryMode,
    NodeInventory,
    PartitionInventory,
    partitions_of,
)


def gpu(index: int, mode: ComputeMode, *processes: GpuProcess) -> GpuInventory:
    """GPU ``index`` in ``mode`` under NPS1; each process on the partition it names."""
    parts = tuple(
        PartitionInventory(
            geometry=g,
            bdf=f"0000:{index:02x}:00.{i}",
            uuid=f"uuid-{index}-{i}",
            render_minor=128 + 8 * index + i,
            memory_used_bytes=sum(p.vram_bytes for p in processes if p.partition_id == g.id),
            activity_percent=None,
            processes=tuple(p for p in processes if p.partition_id == g.id),
        )
        for i, g in enumerate(partitions_of(index, mode, MemoryMode.NPS1))
    )
    return GpuInventory(
        index=index,
        bdf=f"0000:{index:02x}:00.0",
        uuid=f"uuid-{index}",
        market_name="AMD Instinct MI300X",
        compute_mode=mode,
        memory_mode=MemoryMode.NPS1,
        partitions=parts,
        temperature_c=None,
        power_w=None,
    )


def node(*gpus: GpuInventory) -> NodeInventory:
    return NodeInventory(MemoryMode.NPS1, frozenset({MemoryMode.NPS1}), gpus)
