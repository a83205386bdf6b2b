"""How much memory one vLLM instance of a model needs on each of its partitions.

The webhook turns ``mipart.io/model`` into a memory request with this, and the launcher checks
that the model fits the partition it got. The formula follows what vLLM does when it sizes an
instance (docs/facts-vllm.md, #kv-cache-sizing and #worked-numbers), per partition
(tensor-parallel rank):

    weights   = params x bytes/param / TP       (FP8: linear layers 1 B, embeddings kept bf16)
    kv_cache  = 2 x layers x kv_heads/TP x head_dim x kv_bytes x ceil(len/16) x 16 x seqs
    overhead  = non-torch + graphs + activations + sampler (+ RCCL buffers when TP > 1)

Everything here lies inside vLLM's ``--gpu-memory-utilization`` budget. The HIP context, which
lies outside it, is the placement engine's to count (``mipart.placement.instance_footprint``),
not part of this estimate.
The overhead constants are [I] figures from H100 logs in vLLM PRs; re-measure them on MI300X
(docs/facts-vllm.md#measured-overheads).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mipart.placement import TENSOR_PARALLEL_DEGREES
from mipart.sizing._models import (
    CATALOG,
    InvalidModelConfig,
    ModelSpec,
    UnknownModel,
    count_parameters,
    lookup,
    spec_from_config,
)

__all__ = [
    "CATALOG",
    "DType",
    "InvalidModelConfig",
    "InvalidSizing",
    "MemoryEstimate",
    "ModelSpec",
    "UnknownModel",
    "count_parameters",
    "estimate",
    "lookup",
    "sampler_bytes",
    "spec_from_config",
]

GIB = 2**30
# vLLM's default KV block: a sequence's KV is allocated in whole blocks
# (docs/facts-vllm.md#kv-cache-sizing).
KV_BLOCK_TOKENS = 16
# Non-torch memory that grows during start-up (attention workspaces, allocator): 1.79 GiB
# measured for Llama-3-8B TP1 (docs/facts-vllm.md#measured-overheads, vLLM PR #10511).
NON_TORCH_BYTES = 1843 * 2**20
# HIP/CUDA-graph memory: 0.32-0.48 GiB for 8B, counted in the overhead. vLLM 0.20+ takes
# its estimate from the KV budget on CUDA, but 0.21 skips it on ROCm and captures the graphs
# after sizing the KV cache, so on MI300X they land beyond the budget
# (docs/facts-vllm.md#graph-memory, docs/launcher.md#limits).
GRAPH_BYTES = GIB // 2
# RCCL/NCCL buffers per rank when TP > 1: non-torch went from 1.79 to 3.58 GiB at TP2
# (docs/facts-vllm.md#measured-overheads).
COMMUNICATOR_BYTES = 1833 * 2**20
# The launcher sets --max-num-batched-tokens explicitly on partitions
# (docs/facts-vllm.md#batching-defaults); this is vLLM's small-device tier, the value to assume
# when the caller does not say.
DEFAULT_BATCHED_TOKENS = 2048
# Activation peak per batched token, in hidden-size-wide bf16 tensors: the residual stream,
# q/k/v and attention output (~4 x hidden) and the gated MLP's gate/up (2 x intermediate).
# With vLLM's 8192 batched tokens and 1024 sampler rows this gives 1.18 GiB for Llama-3-8B
# against the 1.26 GiB measured (docs/facts-vllm.md#measured-overheads).
_ACTIVATION_HIDDEN_WIDTHS = 4
_ACTIVATION_MLP_WIDTHS = 2
_ACTIVATION_BYTES = 2
# The sampler warm-up holds fp32 logits for min(max_num_seqs, batched tokens) rows
# (docs/facts-vllm.md#sampler-warm-up).
_LOGIT_BYTES = 4


class InvalidSizing(ValueError):
    """Arguments vLLM itself would refuse (TP that does not divide the heads, a zero length)."""


class DType(StrEnum):
    BF16 = "bf16"
    FP8 = "fp8"

    @property
    def bytes(self) -> int:
        return 1 if self is DType.FP8 else 2


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes an instance needs; ``per_partition_bytes`` is the memory limit to request."""

    weights_bytes: int  # the whole model
    kv_cache_bytes: int  # over all ranks (KV heads are replicated when TP > kv_heads)
    overhead_bytes: int  # per partition: every rank is a process with its own runtime
    total_bytes: int  # weights + kv_cache + overhead x TP
    per_partition_bytes: int
    tensor_parallel: int
    max_model_len: int
    kv_bytes_per_token: int  # per partition


def estimate(
    spec: ModelSpec,
    *,
    dtype: DType | str = DType.BF16,
    kv_cache_dtype: DType | str = "auto",
    max_model_len: int | None = None,
    max_num_seqs: int = 1,
    max_num_batched_tokens: int | None = None,
    tensor_parallel: int = 1,
) -> MemoryEstimate:
    """Memory for ``max_num_seqs`` sequences of ``max_model_len`` tokens (default: the model's
    context), served with ``tensor_parallel`` partitions.

    ``kv_cache_dtype="auto"`` is vLLM's default: the model's activation dtype, bf16 even for
    FP8 weights; only ``--kv-cache-dtype fp8`` halves the KV cache
    (docs/facts-vllm.md#kv-cache-sizing).
    """
    weight_dtype = _dtype(dtype, "dtype")
    kv_dtype = DType.BF16 if kv_cache_dtype == "auto" else _dtype(kv_cache_dtype, "kv_cache_dtype")
    tp = _check_tensor_parallel(spec, tensor_parallel)
    length = spec.max_context if max_model_len is None else max_model_len
    if length <= 0 or max_num_seqs <= 0:
        raise InvalidSizing("max_model_len and max_num_seqs must be positive")
    if length > spec.max_context:
        raise InvalidSizing(
            f"max_model_len {length} exceeds {spec.name}'s context of {spec.max_context} tokens"
        )
    batched = max(max_num_batched_tokens or DEFAULT_BATCHED_TOKENS, max_num_seqs)

    weights = weight_bytes(spec, weight_dtype)
    kv_heads_per_rank = max(1, spec.kv_heads // tp)
    kv_per_token = 2 * spec.layers * kv_heads_per_rank * spec.head_dim * kv_dtype.bytes
    blocks = -(-length // KV_BLOCK_TOKENS)
    kv_per_rank = kv_per_token * blocks * KV_BLOCK_TOKENS * max_num_seqs
    overhead = _overhead(spec, tp, batched, min(max_num_seqs, batched))
    per_partition = -(-weights // tp) + kv_per_rank + overhead
    return MemoryEstimate(
        weights_bytes=weights,
        kv_cache_bytes=kv_per_rank * tp,
        overhead_bytes=overhead,
        total_bytes=weights + kv_per_rank * tp + overhead * tp,
        per_partition_bytes=per_partition,
        tensor_parallel=tp,
        max_model_len=length,
        kv_bytes_per_token=kv_per_token,
    )


def weight_bytes(spec: ModelSpec, dtype: DType) -> int:
    """FP8 checkpoints quantize the linear layers and keep embeddings and lm_head in bf16:
    8.5 GiB for Llama-3-8B, 67.7 GiB for 70B (docs/facts-vllm.md#worked-numbers)."""
    if dtype is DType.BF16:
        return spec.parameters * 2
    embeddings = spec.embedding_parameters
    return (spec.parameters - embeddings) * 1 + embeddings * 2


def _overhead(spec: ModelSpec, tp: int, batched_tokens: int, sampler_rows: int) -> int:
    mlp_width = spec.intermediate_size * spec.experts_per_token // tp
    widths = _ACTIVATION_HIDDEN_WIDTHS * spec.hidden_size + _ACTIVATION_MLP_WIDTHS * mlp_width
    activations = batched_tokens * widths * _ACTIVATION_BYTES
    sampler = sampler_bytes(spec, sampler_rows)
    communicators = COMMUNICATOR_BYTES if tp > 1 else 0
    return NON_TORCH_BYTES + GRAPH_BYTES + activations + sampler + communicators


def sampler_bytes(spec: ModelSpec, rows: int) -> int:
    """The sampler warm-up's fp32 logits for ``rows`` sequences (min(max_num_seqs, batched
    tokens)): 0.5 MiB a row for a 128k vocabulary, so it matters at 256 sequences."""
    return rows * spec.vocab_size * _LOGIT_BYTES


def _check_tensor_parallel(spec: ModelSpec, tp: int) -> int:
    if tp not in TENSOR_PARALLEL_DEGREES:
        raise InvalidSizing(f"tensor_parallel {tp} is not one of 1, 2, 4, 8")
    # vLLM shards attention heads evenly and replicates KV heads only by whole factors.
    if spec.attention_heads % tp or (spec.kv_heads % tp and tp % spec.kv_heads):
        raise InvalidSizing(
            f"{spec.name}: {spec.attention_heads} attention heads and {spec.kv_heads} KV heads "
            f"cannot be split over {tp} partitions"
        )
    return tp


def _dtype(value: DType | str, field: str) -> DType:
    try:
        return DType(str(value).lower())
    except ValueError:
        allowed = ", ".join(d.value for d in DType)
        raise InvalidSizing(f"{field}: {value!r} is not one of {allowed}") from None
