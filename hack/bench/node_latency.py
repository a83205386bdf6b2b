#!/usr/bin/env python3
"""NodeService GetNode latency over the daemon's unix socket, and the daemon's memory.

A real mipart-daemon over the emulated libamd_smi (through the real amdsmi package), with
every GPU in CPX: 8 GPUs x 8 partitions = 64 partitions, the largest inventory a node has.
GetNode reads the hardware on each call (as amd-smi does), so this measures the whole path:
gRPC, the partition manager, amdsmi and the emulated library.

    hack/bench/node_latency.py [--calls N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

# This file runs as a script; its shared helpers are found from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hack.bench.report import machine, percentile, print_table
from mipart.api.v1 import node_pb2 as pb
from mipart.api.v1 import node_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
EMULATOR = REPO / "hack" / "amdsmi-emulator"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 calls")
    args = parser.parse_args()
    calls = 100 if args.quick else args.calls
    subprocess.run(["make", "-s", "-C", str(EMULATOR)], check=True)
    with tempfile.TemporaryDirectory(prefix="mipart-bench-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "ROCM_PATH": str(EMULATOR / "build"),
            "ROCM_HOME": str(EMULATOR / "build"),
            "MIPART_EMULATOR_STATE": str(work / "emulator.state"),
        }
        socket = work / "node.sock"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mipart.agent.main", "--socket", str(socket),
             "--state-dir", str(work / "state"), "--metrics-address", "off",
             "--log-level", "warning"],
            env=env,
        )  # fmt: skip
        try:
            return measure(socket, daemon.pid, calls, env)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)


def measure(socket: Path, pid: int, calls: int, env: dict[str, str]) -> int:
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.NodeServiceStub(channel)
        rss_idle = rss_mib(pid)
        for gpu in range(8):
            for _event in stub.SetComputePartition(
                pb.SetComputePartitionRequest(gpu_index=gpu, compute_partition="CPX")
            ):
                pass
        node = stub.GetNode(pb.GetNodeRequest())
        partitions = sum(len(g.partitions) for g in node.gpus)
        for _ in range(20):  # warm up
            stub.GetNode(pb.GetNodeRequest())
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            stub.GetNode(pb.GetNodeRequest())
            timings.append((time.perf_counter() - started) * 1000)
        rss_busy = rss_mib(pid)
    print(f"# {machine()}")
    print(f"# GetNode over a unix socket, {partitions} partitions, {calls} calls\n")
    print_table(
        ["partitions", "calls", "p50 ms", "p99 ms", "mean ms", "daemon RSS MiB (idle/after)"],
        [[partitions, calls, percentile(timings, 50), percentile(timings, 99),
          sum(timings) / len(timings), f"{rss_idle:.0f} / {rss_busy:.0f}"]],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
