"""mipart-vllm: reading the allocation and the user's arguments, finding the model's numbers,
and the exact command of a dry run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from mipart.contract import environment
from mipart.contract.allocation import encode
from mipart.launcher import main as launcher
from mipart.launcher import vllm_args
from mipart.launcher.model_config import ModelNotFound, find
from mipart.placement import Allocation, Sharing

GIB = 2**30
ALLOCATION = {
    "MIPART_PARTITIONS": "gpu3-cpx-5",
    "MIPART_MEMORY_LIMIT_BYTES": str(20 * GIB),
    "MIPART_PARTITION_MEMORY_BYTES": str(24574 * 2**20),
    "MIPART_MEMORY_POOL": "gpu3-pool0",
}
LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    code = launcher.main(["--dry-run", *argv], env=ALLOCATION if env is None else env)
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_prints_the_exact_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "8k",
        "--enable-prefix-caching",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == (
        "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8k --enable-prefix-caching"
        " --tensor-parallel-size 1 --gpu-memory-utilization 0.8334 --max-num-seqs 41"
        " --max-num-batched-tokens 2048"
    )
    assert "--gpu-memory-utilization 0.8334 (20Gi)" in err


def test_allocation_flags_replace_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--partitions", "gpu0-spx-0", "--memory-limit", "180Gi",
        "--partition-memory", "196592Mi", "--memory-pools", "gpu0-pool0",
        "serve", "meta-llama/Llama-3.1-70B-Instruct", env={},
    )  # fmt: skip
    assert code == 0
    assert out.strip().endswith(
        "--gpu-memory-utilization 0.9375 --max-model-len 131072 --max-num-seqs 256"
        " --max-num-batched-tokens 2048"
    )


def test_a_model_too_big_is_refused_with_both_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "serve", "meta-llama/Llama-3.1-70B-Instruct")
    assert code == 1
    assert out == ""
    assert "does not fit" in err
    assert "needs 134.1Gi per partition" in err
    assert "gives vLLM 19.9Gi" in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-tp", "2"], "--tensor-parallel-size 2: the allocation holds 1 partition"),
        (["--gpu-memory-utilization", "0.9"], "allows at most 0.8334"),
        (["--gpu-memory-utilization=abc"], "not a number"),
        (["--kv-cache-memory-bytes", "4G"], "--kv-cache-memory-bytes"),
        (["--pipeline-parallel-size", "2"], "--pipeline-parallel-size 2"),
        (["--max-model-len", "8k", "--max-model-len", "4k"], "given twice"),
        (["--max-model-len", "eight"], "--max-model-len 'eight': expected an integer"),
        (["--quantization", "awq"], "--quantization awq"),
        (["--dtype", "float32"], "--dtype float32"),
        (["--kv-cache-dtype", "int4"], "--kv-cache-dtype int4"),
        (["--max-num-seqs"], "--max-num-seqs: expects a value"),
        (["--max_model_len", "4k", "--max-model-len", "8k"], "given twice"),
        (["--tensor_parallel_size", "4"], "--tensor-parallel-size 4: the allocation holds 1"),
        (["--max-model", "4096"], "--max-model: write the flag in full (--max-model-len)"),
        (["--gpu-mem=0.5"], "write the flag in full (--gpu-memory-utilization)"),
        (["--config", "serve.yaml"], "--config: give vLLM's arguments on the command line"),
    ],
)
def test_conflicting_or_unusable_arguments_are_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    code, out, err = run(capsys, "serve", "meta-llama/Llama-3.1-8B-Instruct", *args)
    assert code == 1
    assert out == ""
    assert named in err


def test_a_lower_utilization_and_explicit_limits_are_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "serve", "--model", "meta-llama/Llama-3.1-8B-Instruct",
        "--gpu-memory-utilization", "0.5", "--max-num-seqs", "8", "--max-model-len=4096",
    )  # fmt: skip
    assert code == 0
    argv = shlex.split(out)
    assert argv[:4] == ["vllm", "serve", "--model", "meta-llama/Llama-3.1-8B-Instruct"]
    assert argv.count("--gpu-memory-utilization") == 1
    assert "0.5" in argv
    assert argv.count("--max-num-seqs") == 1
    assert "8" in argv
    assert "--max-model-len=4096" in argv
    assert "--max-model-len" not in argv


def test_missing_allocation_says_what_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "meta-llama/Llama-3.1-8B-Instruct", env={})
    assert code == 1
    assert "MIPART_PARTITIONS is not set" in err
    bad = {**ALLOCATION, "MIPART_MEMORY_LIMIT_BYTES": "20Gi"}
    code, _, err = run(capsys, "serve", "meta-llama/Llama-3.1-8B-Instruct", env=bad)
    assert code == 1
    assert "MIPART_MEMORY_LIMIT_BYTES='20Gi'" in err


def test_human_readable_integers_follow_vllm() -> None:
    assert vllm_args.human_int("--max-model-len", "8k") == 8000
    assert vllm_args.human_int("--max-model-len", "8K") == 8192
    assert vllm_args.human_int("--max-model-len", "25.6k") == 25600
    assert vllm_args.human_int("--max-model-len", "131072") == 131072


def test_the_config_json_of_a_local_model_directory_is_read(tmp_path: Path) -> None:
    model = tmp_path / "my-llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_8B_CONFIG))
    found = find(str(model), None, {})
    assert found.source == str(model / "config.json")
    assert found.spec.layers == 32
    assert found.spec.kv_heads == 8


def test_the_hugging_face_cache_is_searched_at_its_main_snapshot(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--acme--llama-8b"
    for snapshot, layers in (("old", 16), ("abc123", 32)):
        (repo / "snapshots" / snapshot).mkdir(parents=True)
        config = {**LLAMA_8B_CONFIG, "num_hidden_layers": layers}
        (repo / "snapshots" / snapshot / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    found = find("acme/llama-8b", None, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert found.spec.layers == 32


def test_an_unknown_model_without_config_says_how_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="give --model-config PATH"):
        find("acme/unknown", None, {"HF_HUB_CACHE": str(tmp_path)})
    with pytest.raises(ModelNotFound, match=r"no config\.json there"):
        find("acme/unknown", tmp_path, {})


def test_an_fp8_checkpoint_is_sized_as_fp8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({**LLAMA_8B_CONFIG, "quantization_config": {"quant_method": "fp8"}})
    )
    code, _out, err = run(capsys, "--model-config", str(tmp_path), "serve", "acme/llama-8b-fp8",
                         "--max-model-len", "8192")  # fmt: skip
    assert code == 0, err
    assert "weights 8.5Gi" in err


@pytest.mark.parametrize(
    ("args", "url"),
    [
        ([], "http://127.0.0.1:8000/health"),
        (["--host", "0.0.0.0", "--port", "9000"], "http://127.0.0.1:9000/health"),
        (["--host", "10.1.2.3", "--ssl-keyfile", "k.pem"], "https://10.1.2.3:8000/health"),
        (["--host", "fd00::5"], "http://[fd00::5]:8000/health"),
    ],
)
def test_vllm_health_is_watched_where_vllm_listens(args: list[str], url: str) -> None:
    user = vllm_args.parse(["serve", "m", *args])
    assert vllm_args.health_url(user, "8000") == url


def test_a_unix_socket_server_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "meta-llama/Llama-3.1-8B-Instruct", "--uds", "/s")
    assert code == 1
    assert "--uds: mipart-vllm watches vLLM's /health over TCP" in err


def bound(partitions: list[str], memory: int) -> str:
    return encode(
        Allocation(
            pod="ns/p",
            pod_uid="u",
            node="n",
            partition_ids=tuple(partitions),
            memory_bytes=memory,
            sharing=Sharing.SHARED,
        )
    )


def test_the_pods_allocation_must_name_the_containers_partitions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve = ("serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "8k")
    same = {**ALLOCATION, environment.ALLOCATION: bound(["gpu3-cpx-5"], 20 * GIB)}
    assert run(capsys, *serve, env=same)[0] == 0

    other = {**ALLOCATION, environment.ALLOCATION: bound(["gpu3-cpx-6"], 20 * GIB)}
    code, _, err = run(capsys, *serve, env=other)
    assert code == 1
    assert "holds partitions gpu3-cpx-5 but the pod was bound to gpu3-cpx-6" in err

    smaller = {**ALLOCATION, environment.ALLOCATION: bound(["gpu3-cpx-5"], 10 * GIB)}
    code, _, err = run(capsys, *serve, env=smaller)
    assert code == 1
    assert "memory limit is 20Gi per partition but the pod was bound with 10Gi" in err

    garbled = {**ALLOCATION, environment.ALLOCATION: "{not json"}
    code, _, err = run(capsys, *serve, env=garbled)
    assert code == 1
    assert f"{environment.ALLOCATION} (mipart.io/allocation): allocation of this pod" in err


def test_the_model_served_must_be_the_one_the_memory_was_sized_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    llama_8b = "meta-llama/Llama-3.1-8B-Instruct"
    sized = {**ALLOCATION, environment.MODEL: llama_8b}
    assert run(capsys, "serve", llama_8b, "--max-model-len", "8k", env=sized)[0] == 0

    code, _, err = run(
        capsys, "serve", "mistralai/Mistral-7B-Instruct-v0.3", "--max-model-len", "8k", env=sized
    )
    assert code == 1
    assert f"pod's memory was sized for {llama_8b} (mipart.io/model)" in err

    # A local copy (or a fine-tune) with the same shapes is the same model for memory.
    local = tmp_path / "my-llama"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(LLAMA_8B_CONFIG))
    code, _, err = run(capsys, "serve", str(local), "--max-model-len", "8k", env=sized)
    assert code == 0, err
    assert f"which has the architecture of {llama_8b}" in err


def test_a_kserve_runtime_serves_the_storage_uris_model_unless_the_arguments_name_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """KServe's storage initializer leaves a storageUri's model in /mnt/models; a runtime's
    --default-model names that place. Arguments that name a model win; with neither, the
    error says what to give the InferenceService."""
    models = tmp_path / "mnt-models"
    models.mkdir()
    (models / "config.json").write_text(json.dumps(LLAMA_8B_CONFIG))
    runtime = ["--default-model", str(models), "serve", "--served-model-name", "chat"]

    code, out, _ = run(capsys, *runtime, "--port", "8080")
    assert code == 0
    assert out.startswith(f"vllm serve {models} --served-model-name chat --port 8080 ")

    code, out, _ = run(capsys, *runtime, "--model", "meta-llama/Llama-3.1-8B-Instruct")
    assert code == 0
    assert out.startswith("vllm serve --served-model-name chat --model meta-llama/Llama-3.1-8B")

    code, out, err = run(capsys, "--default-model", str(tmp_path / "none"), "serve")
    assert code == 1
    assert "no model: give `serve MODEL` or --model MODEL; nothing at --default-model" in err
    assert "give the InferenceService a storageUri, or --model in spec.predictor.model.args" in err
