"""Which model is being served, in numbers: its config.json, found where vLLM would find it,
or the catalog's entry; and the weight and KV-cache dtypes the user's flags imply."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipart.launcher.vllm_args import ArgumentConflict, UserArgs
from mipart.sizing import (
    DType,
    InvalidModelConfig,
    ModelSpec,
    UnknownModel,
    lookup,
    spec_from_config,
)

# vLLM --dtype values whose weights take two bytes, as the estimate assumes.
_TWO_BYTE_DTYPES = {"auto", "bfloat16", "bf16", "float16", "half", "fp16"}


class ModelNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class ServedModel:
    spec: ModelSpec
    source: str  # where the numbers came from, for the launcher's summary
    config: Mapping[str, Any]  # the config.json read, or {} for a catalog entry


def find(model: str, explicit: Path | None, env: Mapping[str, str]) -> ServedModel:
    """``explicit`` (a config.json or its directory), else the model's own directory, else the
    Hugging Face cache, else the catalog."""
    for candidate in _candidates(model, explicit, env):
        if candidate.is_file():
            return _read(candidate, model)
        if explicit is not None:
            raise ModelNotFound(f"--model-config {explicit}: no config.json there")
    try:
        return ServedModel(lookup(model), "mipart's model catalog", {})
    except UnknownModel as err:
        raise ModelNotFound(
            f"no config.json for {model!r} (not a local directory, not in the Hugging Face "
            f"cache) and {err}; give --model-config PATH"
        ) from None


def weight_dtype(user: UserArgs, model: ServedModel) -> DType:
    quantization = user.get("--quantization") or _checkpoint_quantization(model.config)
    if quantization is not None:
        if quantization.lower() == "fp8":
            return DType.FP8
        raise ArgumentConflict(
            f"--quantization {quantization}: mipart sizes bf16 and fp8 weights only; "
            "serve an fp8 or bf16 checkpoint"
        )
    dtype = (user.get("--dtype") or "auto").lower()
    if dtype not in _TWO_BYTE_DTYPES:
        raise ArgumentConflict(
            f"--dtype {dtype}: mipart sizes 2-byte weights ({', '.join(sorted(_TWO_BYTE_DTYPES))})"
            " or fp8 (--quantization fp8)"
        )
    return DType.BF16


def kv_cache_dtype(user: UserArgs) -> DType | str:
    value = (user.get("--kv-cache-dtype") or "auto").lower()
    if value in ("auto", "bfloat16", "float16"):
        return "auto"
    if value.startswith("fp8"):
        return DType.FP8
    raise ArgumentConflict(f"--kv-cache-dtype {value}: mipart sizes auto, bfloat16 or fp8*")


def _candidates(model: str, explicit: Path | None, env: Mapping[str, str]) -> list[Path]:
    if explicit is not None:
        return [explicit / "config.json" if explicit.is_dir() else explicit]
    found = [Path(model) / "config.json"]
    if "/" in model and not model.startswith(("/", ".")):
        found.extend(_hub_snapshots(model, env))
    return found


def _hub_snapshots(model: str, env: Mapping[str, str]) -> list[Path]:
    """Where huggingface_hub caches ``org/name``: the snapshot ``refs/main`` names first."""
    hub = Path(
        env.get("HF_HUB_CACHE")
        or Path(env.get("HF_HOME") or Path(env.get("HOME", "~")) / ".cache/huggingface") / "hub"
    ).expanduser()
    repo = hub / ("models--" + model.replace("/", "--"))
    main = repo / "refs" / "main"
    snapshots = []
    if main.is_file():
        snapshots.append(repo / "snapshots" / main.read_text().strip() / "config.json")
    snapshots.extend(sorted((repo / "snapshots").glob("*/config.json")))
    return snapshots


def _read(path: Path, model: str) -> ServedModel:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelNotFound(f"{path}: {err}") from None
    if not isinstance(config, dict):
        raise ModelNotFound(f"{path}: not a JSON object")
    try:
        spec = spec_from_config(config, name=model)
    except InvalidModelConfig as err:
        raise ModelNotFound(f"{path}: {err}") from None
    return ServedModel(spec, os.fspath(path), config)


def _checkpoint_quantization(config: Mapping[str, Any]) -> str | None:
    quant = config.get("quantization_config")
    if not isinstance(quant, Mapping):
        return None
    method = str(quant.get("quant_method", ""))
    # compressed-tensors FP8 checkpoints (e.g. RedHatAI's) say so in their format.
    if method == "compressed-tensors" and "float" in str(quant.get("format", "")):
        return "fp8"
    return method or None
