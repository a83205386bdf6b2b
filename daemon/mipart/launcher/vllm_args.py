"""The user's ``vllm serve`` arguments: read the few that sizing depends on, check them against
the allocation, and add what the user left to the launcher.

Only the flags below are interpreted; every other argument passes through untouched, in order,
for vLLM's own parser to judge. Spellings follow vLLM 0.21's parser (aliases included).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mipart.sizing import ServingLimits, ServingPlan

# canonical flag -> the spellings vLLM accepts for it
_FLAGS: dict[str, tuple[str, ...]] = {
    "--model": ("--model",),
    "--gpu-memory-utilization": ("--gpu-memory-utilization", "--device-memory-utilization"),
    "--tensor-parallel-size": ("--tensor-parallel-size", "-tp"),
    "--pipeline-parallel-size": ("--pipeline-parallel-size", "-pp"),
    "--data-parallel-size": ("--data-parallel-size", "-dp"),
    "--max-model-len": ("--max-model-len",),
    "--max-num-seqs": ("--max-num-seqs",),
    "--max-num-batched-tokens": ("--max-num-batched-tokens",),
    "--kv-cache-memory-bytes": ("--kv-cache-memory-bytes",),
    "--dtype": ("--dtype",),
    "--quantization": ("--quantization", "-q"),
    "--kv-cache-dtype": ("--kv-cache-dtype",),
    "--port": ("--port",),
    "--host": ("--host",),
    "--uds": ("--uds",),
    "--ssl-keyfile": ("--ssl-keyfile",),
}
_CANONICAL = {spelling: flag for flag, spellings in _FLAGS.items() for spelling in spellings}
# vLLM's human-readable integers: 1k = 1000, 1K = 1024, up to T (utils/argparse_utils.py).
_HUMAN_INT = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgGtT]?)$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


class ArgumentConflict(ValueError):
    """A user argument contradicts the allocation or cannot be honoured; names the flag."""


@dataclass(frozen=True, slots=True)
class UserArgs:
    model: str
    values: dict[str, str]  # canonical flag -> value, for the flags above that were given
    passthrough: tuple[str, ...]  # every argument after the model, verbatim

    def limits(self) -> ServingLimits:
        return ServingLimits(
            max_model_len=self._int("--max-model-len"),
            max_num_seqs=self._int("--max-num-seqs"),
            max_num_batched_tokens=self._int("--max-num-batched-tokens"),
        )

    def get(self, flag: str) -> str | None:
        return self.values.get(flag)

    def _int(self, flag: str) -> int | None:
        value = self.values.get(flag)
        return None if value is None else human_int(flag, value)


def parse(argv: Sequence[str], *, default_model: str | None = None) -> UserArgs:
    """``[serve] MODEL [options]`` or ``[serve] --model MODEL [options]``; ``default_model``
    when they name none (KServe's storage initializer puts a storageUri's model in a
    directory the runtime names)."""
    args = list(argv)
    if args and args[0] == "serve":
        args = args[1:]
    values: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        flag = _flag(name) if arg.startswith("-") else None
        if flag is None:
            if not arg.startswith("-") and not positional and i == 0:
                positional.append(arg)
            i += 1
            continue
        if eq:
            value = inline
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        else:
            raise ArgumentConflict(f"{name}: expects a value")
        if flag in values:
            raise ArgumentConflict(f"{name}: given twice ({values[flag]!r} and {value!r})")
        values[flag] = value
        i += 1
    model = values.get("--model") or (positional[0] if positional else None) or default_model
    if model is None:
        raise ArgumentConflict("no model: give `serve MODEL` or --model MODEL")
    if positional and "--model" in values:
        raise ArgumentConflict(f"the model is given twice: {positional[0]!r} and --model")
    return UserArgs(model=model, values=values, passthrough=tuple(args[len(positional) :]))


def _flag(name: str) -> str | None:
    """The canonical flag ``name`` spells, as vLLM's parser reads it: ``_`` for ``-`` in long
    names. An abbreviation of one of the flags read here is refused, not guessed (argparse
    would take it, and the launcher's own flag added after it would silently win), and so is
    ``--config``, whose file could set them out of the launcher's sight."""
    if not name.startswith("--"):
        return _CANONICAL.get(name)
    spelled = "--" + name[2:].replace("_", "-")
    if spelled in _CANONICAL:
        return _CANONICAL[spelled]
    if spelled == "--config":
        raise ArgumentConflict(
            "--config: give vLLM's arguments on the command line, where the launcher can check "
            "them against the allocation"
        )
    abbreviated = [s for s in _CANONICAL if s.startswith("--") and s.startswith(spelled)]
    if abbreviated and len(spelled) > 2:
        raise ArgumentConflict(f"{name}: write the flag in full ({', '.join(abbreviated)})")
    return None


def human_int(flag: str, value: str) -> int:
    match = _HUMAN_INT.match(value.strip())
    if match is None:
        raise ArgumentConflict(f"{flag} {value!r}: expected an integer such as 8192, 8k or 8K")
    number, suffix = float(match.group(1)), match.group(2)
    base = 1024 ** ("kmgt".index(suffix.lower()) + 1) if suffix.isupper() else _SCALE[suffix]
    result = int(number * base)
    if result <= 0:
        raise ArgumentConflict(f"{flag} {value!r}: must be positive")
    return result


def check(user: UserArgs, tensor_parallel: int) -> None:
    """Refuse what the allocation cannot honour, before any sizing."""
    tp = user.get("--tensor-parallel-size")
    if tp is not None and tp != str(tensor_parallel):
        raise ArgumentConflict(
            f"--tensor-parallel-size {tp}: the allocation holds {tensor_parallel} partition(s); "
            "change mipart.io/partitions instead"
        )
    for flag in ("--pipeline-parallel-size", "--data-parallel-size"):
        value = user.get(flag)
        if value not in (None, "1"):
            raise ArgumentConflict(
                f"{flag} {value}: an allocation serves one tensor-parallel instance; "
                "run more replicas instead"
            )
    if user.get("--kv-cache-memory-bytes") is not None:
        raise ArgumentConflict(
            "--kv-cache-memory-bytes: the launcher sizes the KV cache through "
            "--gpu-memory-utilization from the memory limit (vLLM's free-memory check at "
            "start-up ignores this flag); leave it out, or set --max-num-seqs/--max-model-len"
        )


def health_url(user: UserArgs, default_port: str) -> str:
    """Where the launcher's lock holder asks vLLM whether it is up: where vLLM listens."""
    if user.get("--uds") is not None:
        raise ArgumentConflict(
            "--uds: mipart-vllm watches vLLM's /health over TCP to release the start-up lock; "
            "serve on a port"
        )
    host = user.get("--host") or ""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - reading vLLM's bind address, not binding
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if user.get("--ssl-keyfile") else "http"
    return f"{scheme}://{host}:{user.get('--port') or default_port}/health"


def command(user: UserArgs, plan: ServingPlan, tensor_parallel: int) -> list[str]:
    """``vllm serve`` with the user's arguments, then the sizing flags the user left out."""
    util = user.get("--gpu-memory-utilization")
    if util is not None:
        try:
            asked = float(util)
        except ValueError:
            raise ArgumentConflict(f"--gpu-memory-utilization {util!r}: not a number") from None
        if not 0 < asked <= plan.gpu_memory_utilization:
            raise ArgumentConflict(
                f"--gpu-memory-utilization {util}: the memory limit allows at most "
                f"{plan.gpu_memory_utilization} of this partition"
            )
    added = {
        "--tensor-parallel-size": str(tensor_parallel),
        "--gpu-memory-utilization": str(plan.gpu_memory_utilization),
        "--max-model-len": str(plan.max_model_len),
        "--max-num-seqs": str(plan.max_num_seqs),
        "--max-num-batched-tokens": str(plan.max_num_batched_tokens),
    }
    head = ["vllm", "serve"] + ([] if "--model" in user.values else [user.model])
    tail = [
        part for flag, value in added.items() if flag not in user.values for part in (flag, value)
    ]
    return head + list(user.passthrough) + tail
