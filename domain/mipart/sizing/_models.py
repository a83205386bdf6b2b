"""What a model is, for memory sizing: the architecture numbers that decide its footprint.

Catalog entries are the published Hugging Face ``config.json`` of the repository named in each
entry (num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, head_dim or
hidden_size / num_attention_heads, intermediate_size, vocab_size, max_position_embeddings,
tie_word_embeddings, num_local_experts, num_experts_per_tok). Parameter counts are the exact
sums of the weight shapes those numbers imply (``count_parameters``; the tests check that the
two agree) and match the model cards (8.03B, 70.6B, 7.25B, 32.8B, 72.7B, 46.7B).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


class UnknownModel(LookupError):
    """A model name that is not in the catalog."""


class InvalidModelConfig(ValueError):
    """A config.json that lacks, or has nonsense in, a number the estimate needs."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The numbers of a decoder-only transformer that decide how much memory vLLM needs."""

    name: str
    parameters: int
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context: int
    tied_embeddings: bool = False
    attention_bias: bool = False
    experts: int = 1
    experts_per_token: int = 1
    aliases: tuple[str, ...] = ()

    @property
    def embedding_parameters(self) -> int:
        """Input embedding plus lm_head (one matrix when tied): kept in bf16 by FP8 checkpoints."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)


def same_architecture(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two models take the same memory at any context: the same shapes, whatever their
    names (a fine-tune, a local copy of a checkpoint, or the catalog's entry for it)."""
    return _shape(a) == _shape(b)


def _shape(spec: ModelSpec) -> tuple[object, ...]:
    return (
        spec.layers,
        spec.hidden_size,
        spec.attention_heads,
        spec.kv_heads,
        spec.head_dim,
        spec.intermediate_size,
        spec.vocab_size,
        spec.tied_embeddings,
        spec.attention_bias,
        spec.experts,
        spec.experts_per_token,
    )


def count_parameters(spec: ModelSpec) -> int:
    """Σ weight shapes of a Llama-style decoder (GQA attention, gated MLP, RMSNorm, optional
    q/k/v biases and mixture of experts with a router)."""
    h, q, kv = spec.hidden_size, spec.attention_heads * spec.head_dim, spec.kv_heads * spec.head_dim
    attention = h * q + 2 * h * kv + q * h
    if spec.attention_bias:
        attention += q + 2 * kv
    mlp = 3 * h * spec.intermediate_size * spec.experts
    router = h * spec.experts if spec.experts > 1 else 0
    per_layer = attention + mlp + router + 2 * h  # two RMSNorm weights
    return spec.layers * per_layer + spec.embedding_parameters + h  # final norm


def spec_from_config(config: Mapping[str, Any], *, name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json (the launcher reads it from the model dir).

    Multimodal configs keep the language model under ``text_config``; that is what is sized.
    A missing ``tie_word_embeddings`` counts as untied (the larger, safer estimate).
    """
    text = config.get("text_config")
    if "num_hidden_layers" not in config and isinstance(text, Mapping):
        config = text
    heads = _positive(config, "num_attention_heads")
    hidden = _positive(config, "hidden_size")
    experts = config.get("num_local_experts") or config.get("num_experts") or 1
    shape = ModelSpec(
        name=name or str(config.get("_name_or_path") or config.get("model_type") or "unknown"),
        parameters=0,
        layers=_positive(config, "num_hidden_layers"),
        hidden_size=hidden,
        attention_heads=heads,
        kv_heads=_positive(config, "num_key_value_heads", default=heads),
        head_dim=_positive(config, "head_dim", default=hidden // heads),
        intermediate_size=_positive(config, "intermediate_size"),
        vocab_size=_positive(config, "vocab_size"),
        max_context=_positive(config, "max_position_embeddings"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias")) or config.get("model_type") == "qwen2",
        experts=int(experts),
        experts_per_token=int(config.get("num_experts_per_tok") or 1),
    )
    return replace(shape, parameters=count_parameters(shape))


def _positive(config: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    value = config.get(key)
    if value is None:
        if default is None:
            raise InvalidModelConfig(f"config.json has no {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidModelConfig(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def lookup(name: str) -> ModelSpec:
    """The catalog entry for ``name``: case-insensitive, with or without the ``org/`` prefix."""
    spec = _INDEX.get(name.strip().lower())
    if spec is None:
        known = ", ".join(spec.name for spec in CATALOG)
        raise UnknownModel(f"unknown model {name!r}; known models: {known}")
    return spec


CATALOG: tuple[ModelSpec, ...] = (
    # huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json
    # (docs/facts-vllm.md#model-shapes: Llama 3 and 3.1 share the shapes; 3.1 has 131072 context)
    ModelSpec(
        name="meta-llama/Llama-3.1-8B-Instruct",
        parameters=8_030_261_248,
        layers=32,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=128256,
        max_context=131072,
        aliases=("meta-llama/Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
    ),
    # huggingface.co/meta-llama/Llama-3.1-70B-Instruct/blob/main/config.json
    ModelSpec(
        name="meta-llama/Llama-3.1-70B-Instruct",
        parameters=70_553_706_496,
        layers=80,
        hidden_size=8192,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
        intermediate_size=28672,
        vocab_size=128256,
        max_context=131072,
        aliases=("meta-llama/Llama-3.1-70B", "meta-llama/Meta-Llama-3.1-70B-Instruct"),
    ),
    # huggingface.co/mistralai/Mistral-7B-Instruct-v0.3/blob/main/config.json
    ModelSpec(
        name="mistralai/Mistral-7B-Instruct-v0.3",
        parameters=7_248_023_552,
        layers=32,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=32768,
        max_context=32768,
    ),
    # huggingface.co/Qwen/Qwen2.5-32B-Instruct/blob/main/config.json (q/k/v carry biases)
    ModelSpec(
        name="Qwen/Qwen2.5-32B-Instruct",
        parameters=32_763_876_352,
        layers=64,
        hidden_size=5120,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
        intermediate_size=27648,
        vocab_size=152064,
        max_context=32768,
        attention_bias=True,
    ),
    # huggingface.co/Qwen/Qwen2.5-72B-Instruct/blob/main/config.json (q/k/v carry biases)
    ModelSpec(
        name="Qwen/Qwen2.5-72B-Instruct",
        parameters=72_706_203_648,
        layers=80,
        hidden_size=8192,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
        intermediate_size=29568,
        vocab_size=152064,
        max_context=32768,
        attention_bias=True,
    ),
    # huggingface.co/mistralai/Mixtral-8x7B-Instruct-v0.1/blob/main/config.json
    ModelSpec(
        name="mistralai/Mixtral-8x7B-Instruct-v0.1",
        parameters=46_702_792_704,
        layers=32,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=32000,
        max_context=32768,
        experts=8,
        experts_per_token=2,
    ),
)


def _index(catalog: tuple[ModelSpec, ...]) -> dict[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for spec in catalog:
        for full in (spec.name, *spec.aliases):
            index[full.lower()] = spec
            index[full.rsplit("/", 1)[-1].lower()] = spec
    return index


_INDEX = _index(CATALOG)
