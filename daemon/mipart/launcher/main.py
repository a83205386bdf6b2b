"""``mipart-vllm``: the serving container's entry point.

Reads the allocation the device plugin gave the container, checks that its limit fits its
partitions by the placement engine's rule (checks.check_fit), sizes vLLM to it (refusing a
model that cannot fit, with both numbers), takes the node's start-up lock so that instances
sharing a memory pool start one after the other, and execs ``vllm serve`` with the user's
arguments plus the sizing flags the user left out.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from mipart.contract import environment
from mipart.contract.environment import AllocationError, ContainerAllocation, from_environ
from mipart.geometry import format_bytes, parse_bytes
from mipart.launcher import model_config, vllm_args
from mipart.launcher.checks import (
    LimitAboveBudget,
    ModelMismatch,
    check_allocation,
    check_fit,
    check_model,
)
from mipart.launcher.startup import LockRequest, exec_in_turn, say
from mipart.sizing import DoesNotFit, InvalidSizing, ServingPlan, plan_serving

DEFAULT_STARTUP_TIMEOUT_S = 1800
DEFAULT_VLLM_PORT = "8000"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-vllm",
        usage="mipart-vllm [options] serve MODEL [vllm serve arguments]",
        description=(
            "Start vLLM within the partition allocation this container holds: computes "
            "--gpu-memory-utilization, --max-model-len, --max-num-seqs and "
            "--max-num-batched-tokens from the memory limit and the model's config.json "
            "(refusing a model that cannot fit), waits for the node's start-up lock so that "
            "instances on one memory pool start one after the other, then execs `vllm serve`. "
            "Arguments you give vLLM are kept; one that contradicts the allocation is an error."
        ),
        epilog=(
            f"The allocation comes from {environment.PARTITIONS}, "
            f"{environment.MEMORY_LIMIT_BYTES}, {environment.PARTITION_MEMORY_BYTES}, "
            f"{environment.MEMORY_POOL} and {environment.STARTUP_SOCKET}, which the mipart "
            f"device plugin sets, checked against {environment.ALLOCATION}; the model against "
            f"{environment.MODEL}. Both come from the pod's annotations through the webhook. "
            "Example: mipart-vllm --dry-run --partitions "
            "gpu0-cpx-0 --memory-limit 20Gi --partition-memory 24574Mi --memory-pools "
            "gpu0-pool0 serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8k"
        ),
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the vLLM command and the sizing, take no lock, start nothing",
    )
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="PATH",
        help="the model's config.json (or its directory); default: the model directory, the "
        "Hugging Face cache, then mipart's catalog",
    )
    p.add_argument(
        "--default-model",
        type=Path,
        metavar="DIR",
        help="serve the model in DIR when the vLLM arguments name none and DIR exists: a "
        "KServe runtime's, where the storage initializer puts the storageUri's model "
        "(/mnt/models)",
    )
    p.add_argument(
        "--startup-timeout",
        type=int,
        default=DEFAULT_STARTUP_TIMEOUT_S,
        metavar="SECONDS",
        help="release the start-up lock if vLLM is not healthy by then",
    )
    given = p.add_argument_group("allocation (instead of the environment, e.g. for --dry-run)")
    given.add_argument("--partitions", metavar="IDS", help="comma-separated partition ids")
    given.add_argument("--memory-limit", metavar="SIZE", help="per partition, e.g. 20Gi")
    given.add_argument("--partition-memory", metavar="SIZE", help="e.g. 24574Mi for CPX")
    given.add_argument("--memory-pools", metavar="POOLS", help="comma-separated, e.g. gpu0-pool0")
    p.add_argument("vllm", nargs=argparse.REMAINDER, help="`serve MODEL [vllm arguments]`")
    return p


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = os.environ if env is None else env
    try:
        allocation = _allocation(args, environ)
        check_allocation(allocation, environ)
        check_fit(allocation)
        user = _user_args(args.vllm, args.default_model)
        vllm_args.check(user, allocation.tensor_parallel)
        model = model_config.find(user.model, args.model_config, environ)
        note = check_model(user.model, model.spec, environ)
        if note:
            say(note)
        sizing = plan_serving(
            model.spec,
            limit_bytes=allocation.memory_limit_bytes,
            partition_bytes=allocation.partition_memory_bytes,
            tensor_parallel=allocation.tensor_parallel,
            dtype=model_config.weight_dtype(user, model),
            kv_cache_dtype=model_config.kv_cache_dtype(user),
            asked=user.limits(),
        )
        command = vllm_args.command(user, sizing, allocation.tensor_parallel)
        health = vllm_args.health_url(user, DEFAULT_VLLM_PORT)
    except DoesNotFit as err:
        return _fail(f"does not fit: {err}")
    except (
        AllocationError,
        LimitAboveBudget,
        ModelMismatch,
        vllm_args.ArgumentConflict,
        model_config.ModelNotFound,
        InvalidSizing,
        ValueError,
    ) as err:
        return _fail(str(err))
    _describe(allocation, model, sizing)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    if allocation.startup_socket is None:
        say(f"{environment.STARTUP_SOCKET} is not set: starting without the node's start-up lock")
        os.execvp(command[0], command)  # noqa: S606 - vLLM becomes the container's process
    return exec_in_turn(
        LockRequest(
            socket=Path(allocation.startup_socket),
            pools=allocation.memory_pools,
            # A pod's hostname is its name.
            holder=f"{socket.gethostname()} (pid {os.getpid()})",
            timeout_s=args.startup_timeout,
            health_url=health,
        ),
        command,
    )


def _user_args(argv: list[str], default: Path | None) -> vllm_args.UserArgs:
    if default is None:
        return vllm_args.parse(argv)
    try:
        return vllm_args.parse(argv, default_model=str(default) if default.is_dir() else None)
    except vllm_args.ArgumentConflict as err:
        if default.is_dir():
            raise
        raise vllm_args.ArgumentConflict(
            f"{err}; nothing at --default-model {default} either (with KServe: give the "
            "InferenceService a storageUri, or --model in spec.predictor.model.args)"
        ) from None


def _allocation(args: argparse.Namespace, env: Mapping[str, str]) -> ContainerAllocation:
    flags = (args.partitions, args.memory_limit, args.partition_memory, args.memory_pools)
    if not any(flags):
        return from_environ(env)
    if not all(flags):
        raise AllocationError(
            "--partitions, --memory-limit, --partition-memory and --memory-pools go together"
        )
    sizes = {}
    for name, value in (
        ("--memory-limit", args.memory_limit),
        ("--partition-memory", args.partition_memory),
    ):
        try:
            sizes[name] = parse_bytes(value)
        except ValueError as err:
            raise AllocationError(f"{name} {value!r}: expected {err}") from None
    return from_environ(
        {
            environment.PARTITIONS: args.partitions,
            environment.MEMORY_LIMIT_BYTES: str(sizes["--memory-limit"]),
            environment.PARTITION_MEMORY_BYTES: str(sizes["--partition-memory"]),
            environment.MEMORY_POOL: args.memory_pools,
            environment.STARTUP_SOCKET: env.get(environment.STARTUP_SOCKET, ""),
        }
    )


def _describe(
    allocation: ContainerAllocation, model: model_config.ServedModel, sizing: ServingPlan
) -> None:
    estimate = sizing.estimate
    say(
        f"{model.spec.name} ({model.source}) on {', '.join(allocation.partitions)}: limit "
        f"{format_bytes(allocation.memory_limit_bytes)} of "
        f"{format_bytes(allocation.partition_memory_bytes)} per partition -> "
        f"--gpu-memory-utilization {sizing.gpu_memory_utilization} "
        f"({format_bytes(sizing.budget_bytes)})"
    )
    say(
        f"needs {format_bytes(sizing.needed_bytes)} per partition: weights "
        f"{format_bytes(-(-estimate.weights_bytes // estimate.tensor_parallel))}, KV for one "
        f"{sizing.max_model_len}-token sequence, overhead {format_bytes(estimate.overhead_bytes)};"
        f" room for {sizing.kv_cache_tokens} KV tokens -> --max-num-seqs {sizing.max_num_seqs}"
    )


def _fail(message: str) -> int:
    say(message)
    return 1


if __name__ == "__main__":
    sys.exit(main())
