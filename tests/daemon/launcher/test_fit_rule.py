"""One usable-memory rule on both sides: the placement engine places a limit on a partition
exactly when mipart-vllm's fit check (checks.check_fit) lets the instance start there.

Every vLLM instance, exclusive or shared, holds its limit plus the memory outside vLLM's
budget (mipart.placement.instance_budget). If either side drifted from the rule, an
allocation would be placed that the launcher then refuses (or caps), or the launcher would
accept a limit placement never gives.
"""

from __future__ import annotations

from collections import Counter
from itertools import product

import pytest

from mipart.contract.environment import ContainerAllocation
from mipart.geometry import (
    GPU_MEMORY_BYTES,
    ComputeMode,
    MemoryMode,
    NodeLayout,
    PartitionGeometry,
)
from mipart.launcher import main as launcher
from mipart.launcher.checks import LimitAboveBudget, check_fit
from mipart.placement import (
    TENSOR_PARALLEL_DEGREES,
    ClusterView,
    NodeCapacity,
    PartitionRequest,
    Sharing,
    allocation_for,
    evaluate,
    instance_budget,
)
from mipart.sizing import CATALOG, DType, InvalidSizing, estimate, utilization

# The context a model named without a memory figure is sized for (the webhook, the traces).
CONTEXT_TOKENS = 8192


def empty_node(mode: ComputeMode) -> NodeCapacity:
    """An 8-GPU MI300X node, every GPU in ``mode`` (NPS1 takes every compute mode)."""
    return NodeCapacity.from_layout("n", NodeLayout(MemoryMode.NPS1, dict.fromkeys(range(8), mode)))


def launches(limit_bytes: int, partitions: list[PartitionGeometry]) -> bool:
    """mipart-vllm's fit check on the allocation as the device plugin hands it over."""
    sizes = {p.memory_bytes for p in partitions}
    assert len(sizes) == 1, "tensor-parallel partitions are all one size"
    given = ContainerAllocation(
        partitions=tuple(p.id for p in partitions),
        memory_limit_bytes=limit_bytes,
        partition_memory_bytes=sizes.pop(),
        memory_pools=tuple(sorted({p.memory_pool for p in partitions})),
    )
    try:
        check_fit(given)
    except LimitAboveBudget as err:
        refusal = err
    else:
        return True
    assert refusal.limit_bytes == limit_bytes
    return False


def placed_and_launched(request: PartitionRequest) -> tuple[bool, bool, str]:
    """Whether the engine places ``request`` on an empty node of its compute mode, and whether
    mipart-vllm starts with the allocation it gets there (on a rejection: with the
    partitions it would have got, all of the mode's size)."""
    assert request.compute_mode is not None
    node = empty_node(request.compute_mode)
    geometry = {p.geometry.id: p.geometry for p in node.partitions}
    result = evaluate(request, [node], [])
    if "n" not in result.feasible:
        partitions = list(geometry.values())[: request.partitions]
        return False, launches(request.memory_bytes, partitions), result.rejected["n"]
    placement = result.feasible["n"]
    allocation = allocation_for(placement, request, pod="default/p", pod_uid="p")
    partitions = [geometry[pid] for pid in allocation.partition_ids]
    started = launches(allocation.memory_bytes, partitions)
    if started:
        # What the engine proposes its own guard accepts, and sizing turns into a fraction.
        ClusterView([node]).reserve(allocation)
        assert 0 < utilization(allocation.memory_bytes, partitions[0].memory_bytes) < 1
    return True, started, placement.detail


def sized_requests() -> list[tuple[str, PartitionRequest]]:
    """Every catalogued model x compute mode x TP degree x dtype x sharing that estimate()
    sizes, as the webhook and the traces build the request."""
    cases = []
    for spec, mode, tp, dtype, sharing in product(
        CATALOG, ComputeMode, TENSOR_PARALLEL_DEGREES, DType, Sharing
    ):
        try:
            per_partition = estimate(
                spec,
                dtype=dtype,
                max_model_len=min(CONTEXT_TOKENS, spec.max_context),
                tensor_parallel=tp,
            ).per_partition_bytes
        except InvalidSizing:
            continue  # vLLM would refuse this TP degree for the model's heads
        label = f"{spec.name} {mode} TP{tp} {dtype} {sharing}"
        cases.append((label, PartitionRequest(per_partition, tp, mode, sharing=sharing)))
    return cases


SIZED = sized_requests()


def test_placement_accepts_exactly_what_mipart_vllm_starts() -> None:
    outcomes: Counter[tuple[Sharing, bool]] = Counter()
    near_the_line = 0
    for label, request in SIZED:
        placed, started, why = placed_and_launched(request)
        # Both directions, each with its own message: placed => starts, starts => placed.
        assert started or not placed, f"{label}: placed ({why}) but mipart-vllm refuses it"
        assert placed or not started, f"{label}: mipart-vllm would start it but rejected: {why}"
        outcomes[(request.sharing, placed)] += 1
        assert request.compute_mode is not None
        size = GPU_MEMORY_BYTES // request.compute_mode.partition_count
        if instance_budget(size) < request.memory_bytes <= size:
            near_the_line += 1  # fits the partition, not the rule: where the two sides split
    assert len(SIZED) > 200
    for sharing in Sharing:
        assert outcomes[(sharing, True)], outcomes
        assert outcomes[(sharing, False)], outcomes
    # Mixtral-8x7B in fp8 on a QPX partition needs 47.3Gi of 47.9Gi: more than an instance
    # may have. Without such a case the test could not tell the two rules apart.
    assert near_the_line >= 2


@pytest.mark.parametrize("sharing", list(Sharing))
@pytest.mark.parametrize("mode", list(ComputeMode))
@pytest.mark.parametrize("tp", TENSOR_PARALLEL_DEGREES)
def test_both_sides_draw_the_line_at_the_same_byte(
    sharing: Sharing, mode: ComputeMode, tp: int
) -> None:
    budget = instance_budget(GPU_MEMORY_BYTES // mode.partition_count)
    for limit, fits in ((budget, True), (budget + 1, False)):
        placed, started, why = placed_and_launched(
            PartitionRequest(limit, tp, mode, sharing=sharing)
        )
        assert (placed, started) == (fits, fits), why


def test_mipart_vllm_refuses_a_limit_above_the_rule_with_both_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cpx = 24574 * 2**20
    budget = instance_budget(cpx)
    flags = ["--dry-run", "--partitions", "gpu0-cpx-0", "--partition-memory", str(cpx),
             "--memory-pools", "gpu0-pool0"]  # fmt: skip
    serve = ["serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "8k"]
    assert launcher.main([*flags, "--memory-limit", str(budget), *serve], env={}) == 0
    capsys.readouterr()
    assert launcher.main([*flags, "--memory-limit", str(budget + 1), *serve], env={}) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"the memory limit is 23Gi ({budget + 1} B) per partition" in err
    assert f"at most 22.9Gi ({budget} B) of a 23.9Gi partition" in err
    assert "1Gi stays outside vLLM's budget" in err
    assert "broke that rule; not starting" in err


def test_every_catalogued_model_is_covered() -> None:
    assert {label.split(" ")[0] for label, _ in SIZED} == {spec.name for spec in CATALOG}
