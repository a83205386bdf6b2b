"""How one vLLM instance is sized to the allocation it got: the numbers mipart-vllm passes.

vLLM's ``--gpu-memory-utilization`` is a fraction of the memory the device reports, which on a
partition is the partition's, not the GPU's (docs/facts-vllm.md, #gpu-memory-utilization and
#partition-memory). The allocation's limit is this instance's share of it, and the placement
engine gave it only within ``mipart.placement.instance_budget``: every instance, exclusive or
shared, also holds memory outside vLLM's budget (the HIP context, RCCL, hipBLASLt handles). So:

    utilization = limit / partition   (rounded down; limit <= instance_budget(partition))

A limit above that budget is refused, never capped: it means placement broke the rule.

The instance fits when weights, one sequence of ``max_model_len`` tokens of KV cache (vLLM
refuses to start otherwise) and the start-up overhead fit that budget. What is left becomes KV
cache; ``max_num_seqs`` is set so that a full batch still has KV_TOKENS_PER_SEQUENCE tokens per
sequence, rather than vLLM's default of 256 sequences that a 24 GiB partition cannot hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mipart.geometry import Rounding, format_bytes
from mipart.placement import instance_budget
from mipart.sizing._memory import (
    DEFAULT_BATCHED_TOKENS,
    KV_BLOCK_TOKENS,
    DType,
    MemoryEstimate,
    estimate,
    sampler_bytes,
)
from mipart.sizing._models import ModelSpec

# vLLM's own default and ceiling for concurrent sequences on an OpenAI server.
DEFAULT_MAX_NUM_SEQS = 256
# [I] KV room per running sequence below which a batch mostly preempts itself: a chat turn of
# a few hundred tokens of prompt and answer.
KV_TOKENS_PER_SEQUENCE = 512
# The granularity of --gpu-memory-utilization we pass: rounding down by at most 10^-4 of a
# 192 GiB GPU wastes < 20 MiB.
_UTILIZATION_STEPS = 10_000


class DoesNotFit(ValueError):
    """The model cannot serve one sequence within the budget; says both numbers."""

    def __init__(self, message: str, needed_bytes: int, budget_bytes: int) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.budget_bytes = budget_bytes


@dataclass(frozen=True, slots=True)
class ServingLimits:
    """What the user asked for explicitly (None: the launcher chooses)."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ServingPlan:
    gpu_memory_utilization: float
    budget_bytes: int  # utilization x partition memory: vLLM's whole budget
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    needed_bytes: int  # weights + one max_model_len sequence + overhead (all sequences' sampler)
    kv_cache_tokens: int  # tokens of KV cache the rest of the budget holds, per partition
    estimate: MemoryEstimate


def utilization(limit_bytes: int, partition_bytes: int) -> float:
    """``--gpu-memory-utilization`` for a limit on a partition: limit / partition, rounded down.

    ValueError for a limit that is not positive or above what one instance may have on the
    partition (``instance_budget``): the memory outside vLLM's budget must stay free, and a
    limit beyond it is an allocation placement should never have made, not one to shrink.
    """
    if limit_bytes <= 0:
        raise ValueError(f"memory limit {limit_bytes} B must be positive")
    budget = instance_budget(partition_bytes)
    if limit_bytes > budget:
        raise ValueError(
            f"memory limit {limit_bytes} B is above the {max(budget, 0)} B one instance may "
            f"have on a partition of {partition_bytes} B"
        )
    return math.floor(limit_bytes * _UTILIZATION_STEPS / partition_bytes) / _UTILIZATION_STEPS


def plan_serving(
    spec: ModelSpec,
    *,
    limit_bytes: int,
    partition_bytes: int,
    tensor_parallel: int,
    dtype: DType,
    kv_cache_dtype: DType | str = "auto",
    asked: ServingLimits = ServingLimits(),
) -> ServingPlan:
    """The flags that make ``spec`` fit ``limit_bytes`` on each of ``tensor_parallel``
    partitions of ``partition_bytes``, honouring what the user asked for.

    Without an explicit ``max_model_len`` the model's context is used if it fits, else the
    longest that does (vLLM would refuse to start with its default); an explicit one that does
    not fit is refused. Raises DoesNotFit with the needed and the available bytes.
    """
    util = utilization(limit_bytes, partition_bytes)
    budget = math.floor(util * partition_bytes)

    def sized(length: int) -> MemoryEstimate:
        return estimate(
            spec,
            dtype=dtype,
            kv_cache_dtype=kv_cache_dtype,
            max_model_len=length,
            max_num_seqs=1,
            max_num_batched_tokens=asked.max_num_batched_tokens,
            tensor_parallel=tensor_parallel,
        )

    # Weights, overhead (with one sampler row) and the KV bytes per token do not depend on
    # the length: size for the longest length asked, then see what is left.
    probe = sized(asked.max_model_len or spec.max_context)
    fixed = _fixed_bytes(probe)
    batched = asked.max_num_batched_tokens or DEFAULT_BATCHED_TOKENS
    room = max(0, (budget - fixed) // probe.kv_bytes_per_token)
    # Each running sequence adds a sampler row (fp32 logits), which the KV cache pays for.
    seqs = asked.max_num_seqs or max(
        1, min(DEFAULT_MAX_NUM_SEQS, batched, room // KV_TOKENS_PER_SEQUENCE)
    )
    extra = sampler_bytes(spec, min(seqs, batched)) - sampler_bytes(spec, 1)
    tokens = max(0, (budget - fixed - extra) // probe.kv_bytes_per_token)
    length = asked.max_model_len or min(
        spec.max_context, tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
    )
    one = sized(max(length, KV_BLOCK_TOKENS))
    needed = one.per_partition_bytes + extra
    if length < KV_BLOCK_TOKENS or needed > budget:
        raise DoesNotFit(
            f"{spec.name} needs {format_bytes(needed, Rounding.UP)} per partition (weights, "
            f"KV cache for one {one.max_model_len}-token sequence, overhead for {seqs} "
            f"sequence(s)) but its memory limit gives vLLM {format_bytes(budget, Rounding.DOWN)} "
            f"(--gpu-memory-utilization {util} of {format_bytes(partition_bytes)})",
            needed,
            budget,
        )
    return ServingPlan(
        gpu_memory_utilization=util,
        budget_bytes=budget,
        max_model_len=length,
        max_num_seqs=seqs,
        max_num_batched_tokens=batched,
        needed_bytes=needed,
        kv_cache_tokens=tokens,
        estimate=one,
    )


def _fixed_bytes(one: MemoryEstimate) -> int:
    """Weights and overhead of a partition: what does not grow with the KV cache."""
    return -(-one.weights_bytes // one.tensor_parallel) + one.overhead_bytes
