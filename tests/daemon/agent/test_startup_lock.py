"""The node's start-up lock: launchers on one memory pool start vLLM one after the other.

A real daemon serves StartupService on its launcher socket; real mipart-vllm processes take
the lock through it and exec a stand-in for ``vllm serve`` (tests/daemon/launcher/fake_vllm.py: no
GPU here), which records when it started and when it answered /health.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from hack.devcluster.node import Node, free_port
from mipart.agent.server.startup_lock import StartupLocks
from mipart.api.v1 import node_pb2, node_pb2_grpc

pytestmark = pytest.mark.integration

FAKE_VLLM = Path(__file__).parents[1] / "launcher" / "fake_vllm.py"
GIB = 2**30


def test_tickets_are_granted_first_come_first_served_per_pool() -> None:
    locks = StartupLocks()
    a = locks.enqueue(frozenset({"gpu0-pool0"}), "a")
    tp = locks.enqueue(frozenset({"gpu0-pool0", "gpu1-pool0"}), "tp")
    b = locks.enqueue(frozenset({"gpu1-pool0"}), "b")
    other = locks.enqueue(frozenset({"gpu2-pool0"}), "other")
    assert locks.wait(a, None, 0).granted
    assert locks.wait(other, None, 0).granted  # another pool does not wait
    # The two-pool request waits for a; b, though its pool is free, waits behind it.
    assert locks.wait(tp, None, 0) == locks.wait(tp, None, 0)
    assert not locks.wait(tp, None, 0).granted
    assert locks.wait(tp, None, 0).holders == ("a",)
    assert not locks.wait(b, None, 0).granted
    assert locks.wait(b, None, 0).position == 2
    locks.release(a)
    assert locks.wait(tp, None, 0).granted
    assert not locks.wait(b, None, 0).granted
    locks.release(tp)
    locks.release(tp)  # twice is harmless
    assert locks.wait(b, None, 0).granted
    assert locks.holders() == {"gpu1-pool0": "b", "gpu2-pool0": "other"}


def test_a_waiter_wakes_when_the_holder_releases() -> None:
    locks = StartupLocks()
    first = locks.enqueue(frozenset({"p"}), "first")
    second = locks.enqueue(frozenset({"p"}), "second")
    waiting = locks.wait(second, None, 0)
    threading.Timer(0.2, locks.release, (first,)).start()
    started = time.monotonic()
    assert locks.wait(second, waiting, 5).granted
    assert time.monotonic() - started < 2


@pytest.fixture
def lock_node(stopped_node: Node) -> Node:
    stopped_node.start("--launcher-socket", str(stopped_node.tmp / "launcher" / "startup.sock"))
    return stopped_node


def hold(node: Node, request: node_pb2.HoldStartupLockRequest) -> grpc.RpcError:
    with grpc.insecure_channel(f"unix://{node.tmp / 'launcher' / 'startup.sock'}") as channel:
        call = node_pb2_grpc.StartupServiceStub(channel).HoldStartupLock(request, timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(call)
        return err.value


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [
        ({"holder": "x", "hold_seconds": 5}, "memory_pools: name at least one"),
        ({"memory_pools": ["gpu9-pool0"], "holder": "x", "hold_seconds": 5}, "gpu9-pool0"),
        ({"memory_pools": ["gpu0-pool0"] * 2, "holder": "x", "hold_seconds": 5}, "twice"),
        ({"memory_pools": ["gpu0-pool0"], "hold_seconds": 5}, "holder: required"),
        ({"memory_pools": ["gpu0-pool0"], "holder": "x"}, "hold_seconds: 0 is not within"),
        ({"memory_pools": ["gpu0-pool0"], "holder": "x", "hold_seconds": 4000}, "1-3600"),
    ],
)
def test_bad_requests_name_the_field(
    lock_node: Node, request_fields: dict[str, object], named: str
) -> None:
    err = hold(lock_node, node_pb2.HoldStartupLockRequest(**request_fields))  # type: ignore[arg-type]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (err.details() or "")


def launcher(
    node: Node, bin_dir: Path, pool: str, port: int, load_s: float = 2
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MIPART_PARTITIONS": f"{pool.split('-', maxsplit=1)[0]}-spx-0",
        "MIPART_MEMORY_LIMIT_BYTES": str(40 * GIB),
        "MIPART_PARTITION_MEMORY_BYTES": str(196592 * 2**20),
        "MIPART_MEMORY_POOL": pool,
        "MIPART_STARTUP_SOCKET": str(node.tmp / "launcher" / "startup.sock"),
        "MIPART_FAKE_LOG": str(node.tmp / "fake-vllm.log"),
        "MIPART_FAKE_LOAD_SECONDS": str(load_s),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mipart.launcher.main",
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--max-model-len",
            "8192",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH entry whose `vllm` is the stand-in (tests/daemon/launcher/fake_vllm.py)."""
    path = tmp_path / "bin"
    path.mkdir()
    fake = path / "vllm"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    fake.chmod(0o755)
    return path


def logged(log: Path, condition: Callable[[str], bool], timeout: float) -> bool:
    """Wait until the stand-ins' log satisfies ``condition``; whether it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(log.read_text() if log.exists() else ""):
            return True
        time.sleep(0.2)
    return False


def times(log: Path) -> dict[tuple[str, int], float]:
    """(event, port) -> when, from the stand-ins' ``<event> <time> <port>`` lines."""
    return {
        (event, int(port)): float(when)
        for event, when, port in (line.split() for line in log.read_text().splitlines())
    }


def restart(node: Node) -> None:
    node.kill()
    node.start("--launcher-socket", str(node.tmp / "launcher" / "startup.sock"))


def test_two_launchers_on_one_pool_start_one_after_the_other(
    lock_node: Node, bin_dir: Path
) -> None:
    ports = {"first": free_port(), "second": free_port(), "elsewhere": free_port()}
    first = launcher(lock_node, bin_dir, "gpu0-pool0", ports["first"])
    time.sleep(1.0)  # first in line
    second = launcher(lock_node, bin_dir, "gpu0-pool0", ports["second"])
    elsewhere = launcher(lock_node, bin_dir, "gpu1-pool0", ports["elsewhere"])
    log = lock_node.tmp / "fake-vllm.log"
    try:
        logged(log, lambda text: text.count("healthy") == 3, timeout=60)
        at = times(log)
        assert len(at) == 6, log.read_text()
        # The second instance on gpu0-pool0 starts only once the first answers /health ...
        assert at[("start", ports["second"])] >= at[("healthy", ports["first"])]
        # ... while one on another pool starts alongside the first.
        assert at[("start", ports["elsewhere"])] < at[("healthy", ports["first"])]
    finally:
        for process in (first, second, elsewhere):
            process.kill()
            process.wait(timeout=10)
    _, stderr = second.communicate()
    assert "waiting for the start-up lock (position 1)" in stderr


def test_a_waiting_launcher_survives_a_daemon_restart(lock_node: Node, bin_dir: Path) -> None:
    """A daemon restart never touches a (starting) container
    (docs/daemon.md#restarts-crashes-and-reboots). The waiting launcher queues again on the
    restarted daemon instead of failing its container."""
    ports = {"first": free_port(), "second": free_port()}
    first = launcher(lock_node, bin_dir, "gpu0-pool0", ports["first"], load_s=30)
    log = lock_node.tmp / "fake-vllm.log"
    logged(log, lambda text: "start" in text, timeout=30)
    second = launcher(lock_node, bin_dir, "gpu0-pool0", ports["second"], load_s=1)
    try:
        time.sleep(2)  # second is queued behind first
        restart(lock_node)
        # The restarted daemon knows no holder: second is granted and its vLLM starts.
        started = logged(log, lambda text: f" {ports['second']}\n" in text, timeout=30)
        assert started, log.read_text()
        assert second.poll() is None, "the waiting launcher gave up"
    finally:
        for process in (first, second):
            process.kill()
            process.wait(timeout=10)
    _, stderr = second.communicate()
    assert "queueing again" in stderr


def test_the_holder_takes_the_lock_again_after_a_daemon_restart(
    lock_node: Node, bin_dir: Path
) -> None:
    """A restarted daemon forgets who held the lock; the holding launcher takes it again, so
    a neighbour that comes after the restart still starts only once the first is healthy."""
    ports = {"first": free_port(), "second": free_port()}
    first = launcher(lock_node, bin_dir, "gpu0-pool0", ports["first"], load_s=15)
    log = lock_node.tmp / "fake-vllm.log"
    second = None
    try:
        started = logged(log, lambda text: f" {ports['first']}\n" in text, timeout=30)
        assert started, "the first vLLM did not start"
        restart(lock_node)
        time.sleep(5)  # the holder reconnects and takes the lock again
        second = launcher(lock_node, bin_dir, "gpu0-pool0", ports["second"], load_s=1)
        started = logged(log, lambda text: f" {ports['second']}\n" in text, timeout=60)
        assert started, log.read_text()
        at = times(log)
        assert at[("start", ports["second"])] >= at[("healthy", ports["first"])]
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
    _, stderr = first.communicate()
    assert "taking the start-up lock again" in stderr
