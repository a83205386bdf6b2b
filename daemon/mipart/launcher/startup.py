"""Take the node's start-up lock, exec vLLM, and keep holding the lock until vLLM is healthy.

The launcher execs ``vllm serve`` so that vLLM is the container's main process and gets its
signals directly. The lock must outlive that exec, so a forked child holds it: the child takes
it, tells the parent through a pipe, then watches vLLM's /health, and releases the lock (by
ending its call to the daemon, which the daemon also notices if the child dies) when vLLM
answers, when vLLM's process is gone, or when the start-up timeout passes.

The child is forked before any gRPC channel exists, so no gRPC state crosses the fork. Once it
exits it stays a zombie until the container ends, as vLLM does not reap children it did not
start: one process-table entry, the price of keeping vLLM the main process.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

_GRANTED = b"granted\n"
_HEALTH_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class LockRequest:
    socket: Path
    pools: tuple[str, ...]
    holder: str
    timeout_s: int
    health_url: str


def exec_in_turn(request: LockRequest, command: list[str]) -> NoReturn:
    """Wait for the lock, then exec ``command``; exit 1 with the reason if the lock fails."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        code = 1
        try:
            code = _hold(request, parent, write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read()
    if outcome != _GRANTED:
        os.waitpid(child, 0)
        reason = outcome.decode(errors="replace").strip() or "the lock holder died"
        say(f"start-up lock not taken: {reason}")
        sys.exit(1)
    os.execvp(command[0], command)  # noqa: S606 - vLLM becomes the container's process


def _hold(request: LockRequest, parent: int, pipe: int) -> int:
    import grpc  # noqa: PLC0415 - only ever in the forked child, after the fork

    from mipart.api.v1 import node_pb2, node_pb2_grpc  # noqa: PLC0415

    # How a call ends when the daemon goes: its connection drops (a crash: UNAVAILABLE) or it
    # cancels the call as it stops (a rolling update: CANCELLED). This side cancels only once
    # vLLM is up (done), so either means: the daemon is restarting, queue or take it again.
    daemon_gone = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

    channel = grpc.insecure_channel(f"unix://{request.socket}")
    stub = node_pb2_grpc.StartupServiceStub(channel)
    message = node_pb2.HoldStartupLockRequest(
        memory_pools=list(request.pools), holder=request.holder, hold_seconds=request.timeout_s
    )
    deadline = time.monotonic() + request.timeout_s

    def take() -> tuple[Any, str | None]:
        """The call holding the lock once granted, or why it could not be taken."""
        while True:
            # wait_for_ready: a daemon that is restarting is waited for, not an error.
            call = stub.HoldStartupLock(message, wait_for_ready=True)
            try:
                for event in call:
                    if event.state == "Granted":
                        return call, None
                    say(f"waiting for the start-up lock (position {event.position}): "
                        f"{event.message}")  # fmt: skip
                return None, "the daemon ended the call before granting the lock"
            except grpc.RpcError as err:
                # The daemon went away while we queued (a restart): queue again, in time.
                if err.code() in daemon_gone and time.monotonic() < deadline:
                    say("the daemon went away while we waited for the lock; queueing again")
                    time.sleep(_HEALTH_POLL_S)
                    continue
                return None, str(err.details())

    call, error = take()
    if error is not None:
        os.write(pipe, f"{request.socket}: {error}\n".encode())
        return 1
    say(f"start-up lock held on {', '.join(request.pools)}; starting vLLM")
    os.write(pipe, _GRANTED)
    os.close(pipe)
    held = {"call": call}
    done = threading.Event()

    def keep() -> None:
        """A restarted daemon has forgotten the holder: take the lock again at once, so a
        neighbour does not start on the pool while this vLLM still sizes itself."""
        current = call
        while not done.is_set():
            try:
                for _ in current:  # nothing more comes but Expired, which ends the call
                    pass
                return
            except grpc.RpcError as err:
                if done.is_set() or err.code() not in daemon_gone:
                    return
            say("the daemon restarted while vLLM starts; taking the start-up lock again")
            current, problem = take()
            if problem is not None:
                say(f"start-up lock not taken again: {problem}")
                return
            held["call"] = current
            if done.is_set():
                current.cancel()

    keeper = threading.Thread(target=keep, name="startup-lock", daemon=True)
    keeper.start()
    why = _wait_for_vllm(request, parent)
    done.set()
    held["call"].cancel()
    channel.close()
    say(f"start-up lock released: {why}")
    return 0


def _wait_for_vllm(request: LockRequest, parent: int) -> str:
    deadline = time.monotonic() + request.timeout_s
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            return "vLLM exited"
        if _healthy(request.health_url):
            return "vLLM is healthy"
        time.sleep(_HEALTH_POLL_S)
    return f"vLLM not healthy after {request.timeout_s} s"


def _healthy(url: str) -> bool:
    # vLLM's own certificate need not name the address asked here: only the answer counts.
    context = ssl._create_unverified_context() if url.startswith("https") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=_HEALTH_POLL_S, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return False


def say(message: str) -> None:
    print(f"mipart-vllm: {message}", file=sys.stderr, flush=True)
