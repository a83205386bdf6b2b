"""The node's start-up lock: launchers on one memory pool start vLLM one after the other.

The daemon's per-pod sockets (StartupSockets: the real gRPC servers, here in the test's
process) serve StartupService; real mipart-vllm processes take the lock through their pod's
socket and exec a stand-in for ``vllm serve`` (tests/daemon/launcher/fake_vllm.py: no
GPU here), which records when it started and when it answered /health.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from hack.devcluster.node import free_port
from mipart.agent.server.startup_lock import StartupLocks
from mipart.agent.server.startup_sockets import StartupSockets
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


class Pods:
    """The daemon's per-pod start-up lock sockets (StartupSockets, the real gRPC servers), in
    this process: what the device plugin opens for each pod whose container starts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sockets = StartupSockets(root)

    def open(self, pod: str, *pools: str) -> Path:
        return self.sockets.open(f"tenants_{pod}", f"tenants/{pod}", frozenset(pools))

    def serve_elsewhere(self, served: Mapping[str, tuple[str, ...]]) -> subprocess.Popen[bytes]:
        """The same pods' sockets served by a process of its own (tests/support/lock_daemon.py),
        which a test kills as a daemon crash would: all its calls end at once."""
        pods = [f"{pod}={','.join(pools)}" for pod, pools in served.items()]
        log = self.root.parent / "lock-daemon.log"
        log.write_text("")
        with log.open("a") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "tests.support.lock_daemon", str(self.root), *pods],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not logged(log, lambda text: "serving\n" in text, timeout=30):
            daemon.kill()
            raise AssertionError(f"the lock daemon did not serve:\n{log.read_text()}")
        return daemon

    def socket(self, pod: str) -> Path:
        return self.root / f"tenants_{pod}" / "startup.sock"


@pytest.fixture
def pods() -> Iterator[Pods]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    root = Path(tempfile.mkdtemp(prefix="lock-", dir="/tmp"))
    served = Pods(root / "launcher")
    yield served
    served.sockets.close()
    shutil.rmtree(root, ignore_errors=True)


def call(socket: Path, request: node_pb2.HoldStartupLockRequest) -> Any:
    channel = grpc.insecure_channel(f"unix://{socket}")
    return channel, node_pb2_grpc.StartupServiceStub(channel).HoldStartupLock(request, timeout=30)


def refusal(socket: Path, request: node_pb2.HoldStartupLockRequest) -> grpc.RpcError:
    channel, stream = call(socket, request)
    with channel, pytest.raises(grpc.RpcError) as err:
        next(stream)
    return err.value


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [
        ({"holder": "x", "hold_seconds": 5}, "memory_pools: name at least one"),
        (
            {"memory_pools": ["gpu1-pool0"], "hold_seconds": 5},
            "gpu1-pool0 not a memory pool of tenants/a's partitions; its pools: gpu0-pool0",
        ),
        ({"memory_pools": ["gpu0-pool0"] * 2, "hold_seconds": 5}, "twice"),
        ({"memory_pools": ["gpu0-pool0"], "holder": "x" * 300, "hold_seconds": 5}, "holder"),
        ({"memory_pools": ["gpu0-pool0"]}, "hold_seconds: 0 is not within"),
        ({"memory_pools": ["gpu0-pool0"], "hold_seconds": 4000}, "1-3600"),
    ],
)
def test_bad_requests_name_the_field(
    pods: Pods, request_fields: dict[str, object], named: str
) -> None:
    socket = pods.open("a", "gpu0-pool0")
    err = refusal(socket, node_pb2.HoldStartupLockRequest(**request_fields))  # type: ignore[arg-type]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (err.details() or "")


def test_a_spoofed_name_and_a_flood_take_nothing_from_the_real_launcher(
    pods: Pods, bin_dir: Path
) -> None:
    """A tenant's container reaches only its own pod's socket. Naming another pod, asking for
    every pool of the node, and 70 calls at once get it nothing beyond its own pool, once:
    a real launcher on another GPU starts at once, and one on the tenant's pool starts as
    soon as the tenant's process dies."""
    attacker = pods.open("attacker", "gpu0-pool0")
    neighbour = pods.open("neighbour", "gpu0-pool0")
    elsewhere = pods.open("elsewhere", "gpu1-pool0")
    every_pool = [f"gpu{g}-pool0" for g in range(8)]
    greedy = refusal(
        attacker,
        node_pb2.HoldStartupLockRequest(
            memory_pools=every_pool, holder="tenants/neighbour", hold_seconds=3600
        ),
    )
    assert greedy.code() == grpc.StatusCode.INVALID_ARGUMENT
    # It holds its own pool, under the neighbour's name...
    held_channel, held = call(
        attacker,
        node_pb2.HoldStartupLockRequest(
            memory_pools=["gpu0-pool0"], holder="tenants/neighbour", hold_seconds=3600
        ),
    )
    assert next(held).state == "Granted"
    # ... and floods: every further call is refused at once, by the service or by gRPC.
    flood = node_pb2.HoldStartupLockRequest(memory_pools=["gpu0-pool0"], hold_seconds=3600)
    with ThreadPoolExecutor(max_workers=70) as pool:
        codes = list(pool.map(lambda _: refusal(attacker, flood).code(), range(70)))
    assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}

    ports = {"neighbour": free_port(), "elsewhere": free_port()}
    log = pods.root / "fake-vllm.log"
    launchers = {
        name: launcher(socket, log, bin_dir, pool, ports[name])
        for name, socket, pool in (
            ("neighbour", neighbour, "gpu0-pool0"),
            ("elsewhere", elsewhere, "gpu1-pool0"),
        )
    }
    try:
        assert logged(
            log, lambda text: "healthy" in text and f" {ports['elsewhere']}\n" in text, 30
        )
        assert f" {ports['neighbour']}\n" not in log.read_text()  # it waits: the pool is held
        held_channel.close()  # the attacker's process dies: its call, and the lock, go
        assert logged(log, lambda text: f" {ports['neighbour']}\n" in text, 30), log.read_text()
    finally:
        for process in launchers.values():
            process.kill()
            process.wait(timeout=10)
    _, stderr = launchers["neighbour"].communicate()
    # The queue names the holder by its pod, not by the name it gave.
    assert "tenants/attacker" in stderr
    assert "tenants/neighbour" not in stderr.split("waiting", 1)[-1].split("\n", 1)[0]


def launcher(
    socket: Path, log: Path, bin_dir: Path, pool: str, port: int, load_s: float = 2
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MIPART_PARTITIONS": f"{pool.split('-', maxsplit=1)[0]}-spx-0",
        "MIPART_MEMORY_LIMIT_BYTES": str(40 * GIB),
        "MIPART_PARTITION_MEMORY_BYTES": str(196592 * 2**20),
        "MIPART_MEMORY_POOL": pool,
        "MIPART_STARTUP_SOCKET": str(socket),
        "MIPART_FAKE_LOG": str(log),
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


def test_two_launchers_on_one_pool_start_one_after_the_other(pods: Pods, bin_dir: Path) -> None:
    ports = {"first": free_port(), "second": free_port(), "elsewhere": free_port()}
    log = pods.root / "fake-vllm.log"
    first = launcher(pods.open("first", "gpu0-pool0"), log, bin_dir, "gpu0-pool0", ports["first"])
    time.sleep(1.0)  # first in line
    second = launcher(
        pods.open("second", "gpu0-pool0"), log, bin_dir, "gpu0-pool0", ports["second"]
    )
    elsewhere = launcher(
        pods.open("elsewhere", "gpu1-pool0"), log, bin_dir, "gpu1-pool0", ports["elsewhere"]
    )
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


def test_a_waiting_launcher_survives_a_daemon_restart(pods: Pods, bin_dir: Path) -> None:
    """A daemon restart never touches a (starting) container
    (docs/daemon.md#restarts-crashes-and-reboots). The waiting launcher queues again on the
    restarted daemon, which serves its pod's socket in the same directory, instead of failing
    its container."""
    ports = {"first": free_port(), "second": free_port()}
    log = pods.root / "fake-vllm.log"
    served = {"first": ("gpu0-pool0",), "second": ("gpu0-pool0",)}
    daemon = pods.serve_elsewhere(served)
    first = launcher(pods.socket("first"), log, bin_dir, "gpu0-pool0", ports["first"], load_s=10)
    logged(log, lambda text: "start" in text, timeout=30)
    second = launcher(pods.socket("second"), log, bin_dir, "gpu0-pool0", ports["second"], load_s=1)
    try:
        time.sleep(2)  # second is queued behind first
        daemon.kill()
        daemon.wait()
        daemon = pods.serve_elsewhere(served)
        # Second is granted (at once, or once first, which takes the lock again, is healthy)
        # and its vLLM starts.
        started = logged(log, lambda text: f" {ports['second']}\n" in text, timeout=60)
        assert started, log.read_text()
        assert second.poll() is None, "the waiting launcher gave up"
    finally:
        for process in (first, second, daemon):
            process.kill()
            process.wait(timeout=10)
    _, stderr = second.communicate()
    assert "queueing again" in stderr


def test_the_holder_takes_the_lock_again_after_a_daemon_restart(pods: Pods, bin_dir: Path) -> None:
    """A restarted daemon forgets who held the lock; the holding launcher takes it again, so
    a neighbour that comes after the restart still starts only once the first is healthy."""
    ports = {"first": free_port(), "second": free_port()}
    log = pods.root / "fake-vllm.log"
    served = {"first": ("gpu0-pool0",), "second": ("gpu0-pool0",)}
    daemon = pods.serve_elsewhere(served)
    first = launcher(pods.socket("first"), log, bin_dir, "gpu0-pool0", ports["first"], load_s=15)
    second = None
    try:
        started = logged(log, lambda text: f" {ports['first']}\n" in text, timeout=30)
        assert started, "the first vLLM did not start"
        daemon.kill()
        daemon.wait()
        daemon = pods.serve_elsewhere(served)
        time.sleep(5)  # the holder reconnects and takes the lock again
        second = launcher(pods.socket("second"), log, bin_dir, "gpu0-pool0", ports["second"],
                          load_s=1)  # fmt: skip
        started = logged(log, lambda text: f" {ports['second']}\n" in text, timeout=60)
        assert started, log.read_text()
        at = times(log)
        assert at[("start", ports["second"])] >= at[("healthy", ports["first"])]
    finally:
        for process in (first, second, daemon):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
    _, stderr = first.communicate()
    assert "taking the start-up lock again" in stderr
