"""Parse a ``vllm serve`` argument list with vLLM's own parser and print what it understood.

Runs under the interpreter of the pinned vLLM (hack/versions.env; hack/setup puts it in
.venv-vllm), not mipart's. Reads a JSON list of commands (``["vllm", "serve", MODEL, ...]``)
on stdin and prints a JSON list: per command, the parsed values of the flags the launcher
sets, or ``{"error": ...}`` with argparse's message. (One process for all: building vLLM's
parser takes seconds.)

vLLM picks its platform when the parser is built and fails without a GPU ("Failed to infer
device type"), so the CPU platform is installed first: the flags and their parsing are the
same on every platform; only a few defaults differ, and none of the flags checked here.
"""

import contextlib
import io
import json
import sys

import vllm.platforms
from vllm.platforms.cpu import CpuPlatform

vllm.platforms.current_platform = CpuPlatform()

from vllm.entrypoints.openai.cli_args import make_arg_parser  # noqa: E402
from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402

FIELDS = (
    "model",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "port",
    "dtype",
    "quantization",
    "kv_cache_dtype",
    "served_model_name",
)


def parse(command: list[str]) -> dict[str, object]:
    argv = command[2:] if command[:2] == ["vllm", "serve"] else command
    # A fresh parser each time: argparse keeps no state between parses, but vLLM's may.
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args(argv)
    except SystemExit:
        return {"error": stderr.getvalue().strip().splitlines()[-1]}
    values = {field: getattr(namespace, field, None) for field in FIELDS}
    # `vllm serve MODEL` passes MODEL as the positional model_tag, which wins over --model.
    if getattr(namespace, "model_tag", None):
        values["model"] = namespace.model_tag
    return values


print(json.dumps([parse(command) for command in json.load(sys.stdin)]))
