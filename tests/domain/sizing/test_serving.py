"""Sizing a vLLM instance to its allocation (mipart.sizing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.placement import instance_budget
from mipart.sizing import (
    DoesNotFit,
    DType,
    ModelSpec,
    ServingLimits,
    estimate,
    lookup,
    plan_serving,
)
from mipart.sizing._memory import sampler_bytes
from mipart.sizing._serving import utilization

GIB = 2**30
CPX = 24574 * 2**20  # an MI300X CPX partition in NPS1
SPX = 196592 * 2**20
LLAMA_8B = lookup("meta-llama/Llama-3.1-8B-Instruct")
LLAMA_70B = lookup("meta-llama/Llama-3.1-70B-Instruct")


def test_utilization_is_the_limit_as_a_fraction_of_the_partition() -> None:
    assert utilization(20 * GIB, CPX) == 0.8334  # 20 / 23.998, rounded down
    # The largest limit placement gives leaves the HIP context outside vLLM's budget.
    budget = instance_budget(CPX)
    assert utilization(budget, CPX) == pytest.approx(budget / CPX, abs=1e-4)
    assert utilization(budget, CPX) <= budget / CPX


@pytest.mark.parametrize("partition", [CPX, SPX // 4, SPX // 2, SPX])
def test_a_limit_above_the_instance_budget_is_refused_not_capped(partition: int) -> None:
    budget = instance_budget(partition)
    assert utilization(budget, partition) < 1
    with pytest.raises(ValueError, match=f"above the {budget} B one instance may have"):
        utilization(budget + 1, partition)
    with pytest.raises(ValueError, match="above"):
        plan_serving(LLAMA_8B, limit_bytes=partition, partition_bytes=partition,
                     tensor_parallel=1, dtype=DType.BF16)  # fmt: skip
    with pytest.raises(ValueError, match="must be positive"):
        utilization(0, partition)


@given(st.data(), st.sampled_from([CPX, SPX // 4, SPX // 2, SPX]))
def test_utilization_never_exceeds_the_limit(data: st.DataObject, partition: int) -> None:
    limit = data.draw(st.integers(1, instance_budget(partition)))
    util = utilization(limit, partition)
    assert util * partition <= limit


def test_an_8b_model_on_a_cpx_partition_gets_flags_that_fit() -> None:
    got = plan_serving(
        LLAMA_8B,
        limit_bytes=20 * GIB,
        partition_bytes=CPX,
        tensor_parallel=1,
        dtype=DType.BF16,
        asked=ServingLimits(max_model_len=8192),
    )
    assert got.gpu_memory_utilization == 0.8334
    assert got.max_model_len == 8192
    assert got.needed_bytes <= got.budget_bytes <= 20 * GIB
    # The KV cache left after weights and overhead decides the batch: ~21k tokens / 512.
    assert 40 <= got.max_num_seqs <= 42
    assert got.max_num_batched_tokens == 2048


def test_without_a_length_the_longest_that_fits_is_chosen() -> None:
    got = plan_serving(LLAMA_8B, limit_bytes=20 * GIB, partition_bytes=CPX, tensor_parallel=1,
               dtype=DType.BF16)  # fmt: skip
    assert got.max_model_len < LLAMA_8B.max_context  # 128k tokens of KV do not fit 20 GiB
    assert got.max_model_len % 16 == 0
    assert got.needed_bytes <= got.budget_bytes
    longer = ServingLimits(max_model_len=got.max_model_len + 1024)
    with pytest.raises(DoesNotFit):
        plan_serving(LLAMA_8B, limit_bytes=20 * GIB, partition_bytes=CPX, tensor_parallel=1,
             dtype=DType.BF16, asked=longer)  # fmt: skip


def test_an_explicit_length_that_does_not_fit_is_refused_with_both_numbers() -> None:
    with pytest.raises(DoesNotFit) as err:
        plan_serving(
            LLAMA_8B,
            limit_bytes=20 * GIB,
            partition_bytes=CPX,
            tensor_parallel=1,
            dtype=DType.BF16,
            asked=ServingLimits(max_model_len=131072),
        )
    assert err.value.needed_bytes > err.value.budget_bytes
    message = str(err.value)
    assert "needs 33.5Gi" in message
    assert "gives vLLM 19.9Gi" in message
    assert "131072-token" in message


def test_a_70b_model_is_refused_on_a_cpx_partition() -> None:
    with pytest.raises(DoesNotFit) as err:
        plan_serving(LLAMA_70B, limit_bytes=20 * GIB, partition_bytes=CPX, tensor_parallel=1,
             dtype=DType.BF16)  # fmt: skip
    assert err.value.needed_bytes > 130 * GIB


def test_a_70b_model_fits_spx_and_the_batch_is_capped() -> None:
    got = plan_serving(LLAMA_70B, limit_bytes=180 * GIB, partition_bytes=SPX, tensor_parallel=1,
               dtype=DType.BF16)  # fmt: skip
    assert got.max_model_len == LLAMA_70B.max_context
    assert got.max_num_seqs == 256


def test_fp8_weights_fit_where_bf16_do_not() -> None:
    limit = 100 * GIB
    with pytest.raises(DoesNotFit):
        plan_serving(LLAMA_70B, limit_bytes=limit, partition_bytes=SPX, tensor_parallel=1,
             dtype=DType.BF16)  # fmt: skip
    got = plan_serving(LLAMA_70B, limit_bytes=limit, partition_bytes=SPX, tensor_parallel=1,
               dtype=DType.FP8)  # fmt: skip
    assert got.needed_bytes <= got.budget_bytes


@given(
    st.sampled_from([LLAMA_8B, LLAMA_70B]),
    st.integers(8, 190),
    st.sampled_from([CPX, SPX // 4, SPX // 2, SPX]),
    st.sampled_from([None, 2048, 8192, 32768]),
)
def test_a_plan_always_leaves_room_for_one_full_sequence(
    spec: ModelSpec, limit_gib: int, partition: int, length: int | None
) -> None:
    """With every sequence's sampler row counted, one max_model_len sequence still fits the
    KV cache: vLLM's own start-up condition. Refusals say a need above the budget."""
    asked = ServingLimits(max_model_len=length)
    limit = min(limit_gib * GIB, instance_budget(partition))
    try:
        got = plan_serving(spec, limit_bytes=limit, partition_bytes=partition,
                   tensor_parallel=1, dtype=DType.BF16, asked=asked)  # fmt: skip
    except DoesNotFit as err:
        refusal = err
    else:
        one = estimate(spec, max_model_len=got.max_model_len, tensor_parallel=1)
        samplers = sampler_bytes(spec, got.max_num_seqs) - sampler_bytes(spec, 1)
        assert one.per_partition_bytes + samplers <= got.budget_bytes
        assert 1 <= got.max_num_seqs <= min(256, got.max_num_batched_tokens)
        return
    assert refusal.needed_bytes > refusal.budget_bytes
