"""The partition model against the MI300X facts (docs/facts-mi300x.md)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.geometry import (
    GPU_MEMORY_BYTES,
    ComputeMode,
    InvalidLayout,
    MemoryMode,
    auto_compute_mode,
    check_combination,
    is_compatible,
    parse_compute_mode,
    parse_memory_mode,
    partitions_of,
)
from mipart.geometry._partitions import valid_combinations

GIB = 2**30


@pytest.mark.parametrize(
    ("mode", "count", "cus", "gib"),
    [
        (ComputeMode.SPX, 1, 304, 192.0),
        (ComputeMode.DPX, 2, 152, 96.0),
        (ComputeMode.QPX, 4, 76, 48.0),
        (ComputeMode.CPX, 8, 38, 24.0),
    ],
)
def test_geometry_matches_the_hardware(mode: ComputeMode, count: int, cus: int, gib: float) -> None:
    parts = partitions_of(0, mode, MemoryMode.NPS1)
    assert len(parts) == count
    assert {p.compute_units for p in parts} == {cus}
    assert {round(p.memory_bytes / GIB, 1) for p in parts} == {gib}


def test_valid_combinations_are_the_driver_table() -> None:
    assert valid_combinations() == [
        "SPX+NPS1",
        "DPX+NPS1",
        "DPX+NPS2",
        "QPX+NPS1",
        "QPX+NPS4",
        "CPX+NPS1",
        "CPX+NPS4",
    ]
    caps = frozenset({MemoryMode.NPS1, MemoryMode.NPS4})
    assert "DPX+NPS2" not in valid_combinations(caps)


def test_spx_with_nps4_is_refused_naming_the_valid_combinations() -> None:
    with pytest.raises(InvalidLayout) as err:
        check_combination(ComputeMode.SPX, MemoryMode.NPS4)
    assert "SPX cannot run with NPS4" in str(err.value)
    assert "CPX+NPS4" in str(err.value)


def test_a_memory_mode_the_node_lacks_is_refused() -> None:
    with pytest.raises(InvalidLayout, match="NPS2 is not supported by this node"):
        check_combination(ComputeMode.DPX, MemoryMode.NPS2, frozenset({MemoryMode.NPS1}))


def test_nps4_pools_follow_the_aids() -> None:
    parts = partitions_of(3, ComputeMode.CPX, MemoryMode.NPS4)
    # Two XCDs share an AID and its two HBM stacks: partitions 0,1 -> pool 0 ... 6,7 -> pool 3.
    assert [p.memory_pool for p in parts] == [f"gpu3-pool{i // 2}" for i in range(8)]
    assert [p.id for p in parts][:2] == ["gpu3-cpx-0", "gpu3-cpx-1"]


def test_auto_mode_after_reload() -> None:
    assert auto_compute_mode(MemoryMode.NPS4) is ComputeMode.CPX
    assert auto_compute_mode(MemoryMode.NPS1) is ComputeMode.SPX


@pytest.mark.parametrize("text", ["TPX", "spx2", "", "NPS1"])
def test_bad_compute_mode_names_the_field_and_allowed_values(text: str) -> None:
    with pytest.raises(InvalidLayout) as err:
        parse_compute_mode(text, field="compute_partition")
    assert str(err.value).startswith("compute_partition: ")
    assert "allowed: SPX, DPX, QPX, CPX" in str(err.value)


def test_mode_names_are_case_insensitive() -> None:
    assert parse_compute_mode(" cpx ") is ComputeMode.CPX
    assert parse_memory_mode("nps4") is MemoryMode.NPS4
    with pytest.raises(InvalidLayout, match="allowed: NPS1, NPS2, NPS4"):
        parse_memory_mode("NPS8")


@given(st.sampled_from(list(ComputeMode)), st.sampled_from(list(MemoryMode)), st.integers(0, 7))
def test_every_valid_layout_covers_the_gpu_exactly(
    compute: ComputeMode, memory: MemoryMode, gpu: int
) -> None:
    if not is_compatible(compute, memory):
        with pytest.raises(InvalidLayout):
            partitions_of(gpu, compute, memory)
        return
    parts = partitions_of(gpu, compute, memory)
    xcds = [x for p in parts for x in p.xcds]
    assert xcds == list(range(8))  # every XCD once, in order
    assert sum(p.memory_bytes for p in parts) <= GPU_MEMORY_BYTES
    assert len({p.id for p in parts}) == len(parts)
    # A partition's XCDs all sit in its memory pool.
    per_pool = 8 // memory.pool_count
    for p in parts:
        assert {x // per_pool for x in p.xcds} == {int(p.memory_pool.rsplit("pool", 1)[1])}
