"""The commands mipart-vllm generates, parsed by vLLM's own `vllm serve` parser.

vLLM cannot serve without a GPU, but its argument parser can be built on a CPU-only machine
(with the CPU platform; see vllm_argcheck.py): this is the nearest real check of what the
launcher execs. The pinned vLLM lives in .venv-vllm, which hack/setup installs.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from hack.devcluster.binaries import REPO_ROOT
from mipart.launcher import main as launcher

ROOT = REPO_ROOT
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
GIB = 2**30

# (allocation flags, vllm arguments) -> the values vLLM must end up with
CASES: list[tuple[list[str], list[str], dict[str, object]]] = [
    (
        ["--partitions", "gpu3-cpx-5", "--memory-limit", "20Gi", "--partition-memory",
         "24574Mi", "--memory-pools", "gpu3-pool0"],
        ["serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "8k", "--port", "8080"],
        {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensor_parallel_size": 1,
         "gpu_memory_utilization": 0.8334, "max_model_len": 8000, "max_num_seqs": 41,
         "max_num_batched_tokens": 2048, "port": 8080},
    ),
    (
        ["--partitions", "gpu0-qpx-0,gpu0-qpx-1", "--memory-limit", "40Gi",
         "--partition-memory", "49148Mi", "--memory-pools", "gpu0-pool0"],
        ["serve", "--model", "Qwen/Qwen2.5-32B-Instruct", "--max-model-len=16384",
         "--enable-prefix-caching"],
        {"model": "Qwen/Qwen2.5-32B-Instruct", "tensor_parallel_size": 2,
         "max_model_len": 16384, "max_num_batched_tokens": 2048},
    ),
    (
        ["--partitions", "gpu1-spx-0", "--memory-limit", "100Gi", "--partition-memory",
         "196592Mi", "--memory-pools", "gpu1-pool0"],
        ["serve", "meta-llama/Llama-3.1-70B-Instruct", "--quantization", "fp8",
         "--kv-cache-dtype", "fp8", "--max-num-seqs", "64"],
        {"tensor_parallel_size": 1, "quantization": "fp8", "kv_cache_dtype": "fp8",
         "max_num_seqs": 64},
    ),
]  # fmt: skip


def vllm_parse(commands: list[list[str]]) -> list[dict[str, object]]:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON.relative_to(ROOT)} is missing: run hack/setup")
    result = subprocess.run(
        [str(VLLM_PYTHON), str(Path(__file__).with_name("vllm_argcheck.py"))],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    parsed: list[dict[str, object]] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def dry_run(capsys: pytest.CaptureFixture[str], allocation: list[str], args: list[str]) -> str:
    assert launcher.main(["--dry-run", *allocation, *args], env={}) == 0
    return capsys.readouterr().out.strip()


def test_generated_commands_parse_to_the_planned_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = [shlex.split(dry_run(capsys, a, args)) for a, args, _ in CASES]
    # A misspelt flag must be refused, or this check could not fail.
    control = [*commands[0], "--gpu-memory-utilisation", "0.5"]
    parsed = vllm_parse([*commands, control])
    for command, got, (_, _, expected) in zip(commands, parsed, CASES, strict=False):
        assert "error" not in got, f"{shlex.join(command)}: {got}"
        assert {key: got[key] for key in expected} == expected, shlex.join(command)
        # What the launcher computed is what vLLM got, flag by flag.
        flags = dict(itertools.pairwise(command))
        assert got["gpu_memory_utilization"] == float(flags["--gpu-memory-utilization"])
    assert "unrecognized arguments: --gpu-memory-utilisation" in str(parsed[-1]["error"])
