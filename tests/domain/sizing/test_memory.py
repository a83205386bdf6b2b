"""Memory estimates against the worked numbers in docs/facts-vllm.md and the hardware."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.geometry import ComputeMode, MemoryMode, partitions_of
from mipart.sizing import (
    DType,
    InvalidModelConfig,
    InvalidSizing,
    UnknownModel,
    estimate,
    lookup,
    spec_from_config,
)
from mipart.sizing._models import CATALOG, count_parameters

GB = 10**9
GIB = 2**30
SPX, DPX, CPX = (
    partitions_of(0, mode, MemoryMode.NPS1)[0].memory_bytes
    for mode in (ComputeMode.SPX, ComputeMode.DPX, ComputeMode.CPX)
)

# meta-llama/Llama-3.1-8B-Instruct config.json, as published (fields the estimate ignores kept).
LLAMA_8B_CONFIG: dict[str, Any] = {
    "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}

MIXTRAL_CONFIG: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
}

QWEN_32B_CONFIG: dict[str, Any] = {
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "max_position_embeddings": 32768,
    "model_type": "qwen2",
    "num_attention_heads": 40,
    "num_hidden_layers": 64,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "vocab_size": 152064,
}


def test_llama_8b_bf16_weights_are_16_gb() -> None:
    est = estimate(lookup("meta-llama/Llama-3.1-8B-Instruct"), max_model_len=8192)
    assert est.weights_bytes == 8_030_261_248 * 2
    assert round(est.weights_bytes / GIB, 2) == 14.96  # docs/facts-vllm.md#worked-numbers
    assert est.kv_bytes_per_token == 128 * 1024  # 128 KiB/token, bf16 KV


def test_llama_70b_bf16_needs_an_spx_gpu_or_tensor_parallelism() -> None:
    spec = lookup("Llama-3.1-70B-Instruct")
    est = estimate(spec, max_model_len=8192)
    assert round(est.weights_bytes / GB, 1) == 141.1
    assert round(est.weights_bytes / GIB, 1) == 131.4
    assert est.kv_bytes_per_token == 320 * 1024
    assert DPX < est.per_partition_bytes <= SPX
    assert est.per_partition_bytes > CPX
    # TP8 over CPX partitions: about 16.4 GiB of weights each (docs/facts-vllm.md#worked-numbers).
    tp8 = estimate(spec, max_model_len=8192, tensor_parallel=8)
    assert round(tp8.weights_bytes / 8 / GIB, 1) == 16.4
    assert tp8.per_partition_bytes < CPX


def test_mixtral_bf16_weights_are_93_gb() -> None:
    est = estimate(lookup("mixtral-8x7b-instruct-v0.1"))
    assert round(est.weights_bytes / GB) == 93


@pytest.mark.parametrize("spec", CATALOG, ids=lambda s: s.name)
def test_fp8_about_halves_the_weights(spec: Any) -> None:
    bf16 = estimate(spec, dtype="bf16").weights_bytes
    fp8 = estimate(spec, dtype=DType.FP8).weights_bytes
    # Linear layers halve; embeddings and lm_head stay bf16, so a little more than half.
    assert 0.5 * bf16 < fp8 < 0.6 * bf16


def test_fp8_weights_match_the_worked_numbers() -> None:
    assert round(estimate(lookup("llama-3.1-8b"), dtype="fp8").weights_bytes / GIB, 1) == 8.5
    assert round(estimate(lookup("llama-3.1-70b"), dtype="fp8").weights_bytes / GIB, 1) == 67.7


def test_kv_cache_follows_length_sequences_dtype_and_tensor_parallelism() -> None:
    spec = lookup("Llama-3.1-8B")
    one = estimate(spec, max_model_len=8192)
    # One 8k sequence, bf16 KV (docs/facts-vllm.md#worked-numbers).
    assert one.kv_cache_bytes == 1 * GIB
    assert estimate(spec, max_model_len=8192, max_num_seqs=4).kv_cache_bytes == 4 * GIB
    assert estimate(spec, max_model_len=8192, kv_cache_dtype="fp8").kv_cache_bytes == GIB // 2
    # FP8 weights with the default "auto" KV dtype keep a bf16 KV cache.
    assert estimate(spec, max_model_len=8192, dtype="fp8").kv_cache_bytes == 1 * GIB
    # Whole blocks of 16 tokens: 8193 tokens take 8208 tokens of KV.
    assert estimate(spec, max_model_len=8193).kv_cache_bytes == 8208 * 128 * 1024
    tp2 = estimate(spec, max_model_len=8192, tensor_parallel=2)
    assert tp2.kv_bytes_per_token == one.kv_bytes_per_token // 2
    assert tp2.kv_cache_bytes == one.kv_cache_bytes


def test_kv_heads_are_replicated_when_tensor_parallelism_exceeds_them() -> None:
    spec = spec_from_config({**LLAMA_8B_CONFIG, "num_key_value_heads": 2})
    tp8 = estimate(spec, max_model_len=1024, tensor_parallel=8)
    assert tp8.kv_bytes_per_token == 2 * 32 * 1 * 128 * 2  # one KV head per rank


def test_default_length_is_the_model_context() -> None:
    spec = lookup("llama-3.1-8b-instruct")
    est = estimate(spec)
    assert est.max_model_len == 131072
    assert est.kv_cache_bytes == 16 * GIB  # one 128k sequence (docs/facts-vllm.md#worked-numbers)


def test_overhead_matches_the_measured_llama_8b_start_up() -> None:
    # vLLM's own defaults on an 80 GiB device: 8192 batched tokens, 1024 sequences. Measured:
    # non-torch 1.79 GiB + activation peak 1.26 GiB, graphs 0.32-0.48 GiB
    # (docs/facts-vllm.md#measured-overheads).
    spec = lookup("Llama-3.1-8B-Instruct")
    est = estimate(spec, max_model_len=1024, max_num_seqs=1024, max_num_batched_tokens=8192)
    assert 3.3 * GIB < est.overhead_bytes < 3.8 * GIB
    tp2 = estimate(spec, max_model_len=1024, tensor_parallel=2)
    assert tp2.overhead_bytes - estimate(spec, max_model_len=1024).overhead_bytes > 1.5 * GIB


def test_per_partition_and_total_add_up() -> None:
    spec = lookup("Qwen2.5-72B-Instruct")
    est = estimate(spec, max_model_len=16384, max_num_seqs=2, tensor_parallel=4)
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + 4 * est.overhead_bytes
    assert 0 <= est.per_partition_bytes * 4 - est.total_bytes < 4
    assert est.per_partition_bytes < DPX


def test_8b_fits_a_cpx_partition_with_a_modest_context() -> None:
    est = estimate(lookup("Llama-3.1-8B-Instruct"), max_model_len=8192, max_num_seqs=2)
    assert est.per_partition_bytes < CPX


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tensor_parallel": 3}, "tensor_parallel 3"),
        ({"max_model_len": 0}, "positive"),
        ({"max_num_seqs": 0}, "positive"),
        ({"max_model_len": 200_000}, "exceeds"),
        ({"dtype": "int4"}, "dtype: 'int4'"),
        ({"kv_cache_dtype": "fp16"}, "kv_cache_dtype"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSizing, match=message):
        estimate(lookup("Llama-3.1-8B"), **kwargs)


def test_heads_that_do_not_split_are_refused() -> None:
    # Qwen2.5-7B's shape: 28 attention heads, 4 KV heads.
    spec = spec_from_config(
        {
            **QWEN_32B_CONFIG,
            "hidden_size": 3584,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        }
    )
    with pytest.raises(InvalidSizing, match="cannot be split over 8"):
        estimate(spec, tensor_parallel=8)
    assert estimate(spec, tensor_parallel=4).tensor_parallel == 4


@pytest.mark.parametrize("spec", CATALOG, ids=lambda s: s.name)
def test_catalog_parameter_counts_are_the_sums_of_their_shapes(spec: Any) -> None:
    assert count_parameters(spec) == spec.parameters


@pytest.mark.parametrize(
    "name",
    [
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/llama-3.1-8b-instruct",
        "Llama-3.1-8B-Instruct",
        "llama-3.1-8b",
        "meta-llama/Llama-3.1-8B",
        " Meta-Llama-3.1-8B-Instruct ",
    ],
)
def test_lookup_is_case_insensitive_and_accepts_short_names(name: str) -> None:
    assert lookup(name).name == "meta-llama/Llama-3.1-8B-Instruct"


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModel) as err:
        lookup("gpt-5")
    message = str(err.value)
    assert "'gpt-5'" in message
    for spec in CATALOG:
        assert spec.name in message


def test_spec_from_a_real_llama_config_round_trips_to_the_catalog() -> None:
    spec = spec_from_config(LLAMA_8B_CONFIG)
    catalog = lookup("Llama-3.1-8B-Instruct")
    assert spec == catalog.__class__(**{**_fields(catalog), "aliases": ()})
    assert estimate(spec, max_model_len=4096) == estimate(catalog, max_model_len=4096)


@pytest.mark.parametrize(
    ("config", "name"),
    [
        (MIXTRAL_CONFIG, "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        (QWEN_32B_CONFIG, "Qwen/Qwen2.5-32B-Instruct"),  # q/k/v biases from model_type qwen2
    ],
)
def test_spec_from_config_counts_parameters_like_the_model_card(
    config: dict[str, Any], name: str
) -> None:
    assert spec_from_config(config).parameters == lookup(name).parameters


def test_spec_from_config_defaults_and_nesting() -> None:
    bare = {k: v for k, v in LLAMA_8B_CONFIG.items() if k != "num_key_value_heads"}
    assert spec_from_config(bare).kv_heads == 32  # MHA when not given
    assert spec_from_config({**LLAMA_8B_CONFIG, "head_dim": None}).head_dim == 128
    assert spec_from_config({**LLAMA_8B_CONFIG, "head_dim": 256}).head_dim == 256
    wrapped = {"model_type": "llava", "text_config": LLAMA_8B_CONFIG}
    assert spec_from_config(wrapped).layers == 32
    assert spec_from_config(LLAMA_8B_CONFIG, name="my-model").name == "my-model"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_hidden_layers": None}, "no 'num_hidden_layers'"),
        ({"hidden_size": "4096"}, "hidden_size must be a positive integer"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"num_attention_heads": True}, "num_attention_heads"),
    ],
)
def test_bad_configs_name_the_field(change: dict[str, Any], message: str) -> None:
    config = {**LLAMA_8B_CONFIG, **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(InvalidModelConfig, match=message):
        spec_from_config(config)


@given(
    length=st.integers(1, 32768),
    seqs=st.integers(1, 256),
    tp=st.sampled_from([1, 2, 4, 8]),
    kv=st.sampled_from(["auto", "fp8"]),
)
def test_estimates_grow_with_length_and_sequences(length: int, seqs: int, tp: int, kv: str) -> None:
    spec = lookup("Mistral-7B-Instruct-v0.3")
    base = estimate(
        spec, max_model_len=length, max_num_seqs=seqs, tensor_parallel=tp, kv_cache_dtype=kv
    )
    longer = estimate(
        spec,
        max_model_len=min(length + 16, 32768),
        max_num_seqs=seqs,
        tensor_parallel=tp,
        kv_cache_dtype=kv,
    )
    more = estimate(
        spec, max_model_len=length, max_num_seqs=seqs + 1, tensor_parallel=tp, kv_cache_dtype=kv
    )
    assert base.per_partition_bytes <= longer.per_partition_bytes
    assert base.per_partition_bytes < more.per_partition_bytes
    assert base.kv_cache_bytes % (spec.layers * 2) == 0


def _fields(spec: Any) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}
