"""StartupService: the start-up lock over gRPC, held for as long as the caller's call is open."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import structlog

from mipart.agent.server.startup_lock import LockState, StartupLocks, Ticket
from mipart.api.v1 import node_pb2 as pb
from mipart.api.v1 import node_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

MAX_HOLD_S = 3600
_MAX_HOLDER_CHARS = 253
# How often a waiting or holding call wakes to notice a caller that went away.
_POLL_S = 1.0


class StartupService(pb_grpc.StartupServiceServicer):
    def __init__(self, locks: StartupLocks, pools: Callable[[], frozenset[str]]) -> None:
        self._locks = locks
        self._pools = pools  # the node's memory pools now

    def HoldStartupLock(
        self, request: pb.HoldStartupLockRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StartupLockEvent]:
        pools = self._validate(request, context)
        ticket = self._locks.enqueue(pools, request.holder)
        released = threading.Event()

        def release() -> None:
            self._locks.release(ticket)
            released.set()

        # Fires when the call ends for any reason: the caller cancelled it, its process died
        # (the connection closed) or this generator returned. False: it has ended already.
        if not context.add_callback(release):
            release()
            return
        try:
            yield from self._hold(request, context, pools, ticket, released)
        finally:
            release()

    def _hold(
        self,
        request: pb.HoldStartupLockRequest,
        context: grpc.ServicerContext,
        pools: frozenset[str],
        ticket: Ticket,
        released: threading.Event,
    ) -> Iterator[pb.StartupLockEvent]:
        log.info("startup_lock.queued", holder=request.holder, pools=sorted(pools))
        state: LockState | None = None
        while not released.is_set():
            state = self._locks.wait(ticket, state, _POLL_S)
            if state.granted:
                break
            if context.is_active():
                yield _event("Queued", state, f"waiting behind {_who(state)} for {_names(pools)}")
        else:
            return
        assert state is not None
        log.info("startup_lock.granted", holder=request.holder, pools=sorted(pools))
        yield _event("Granted", state, f"holding {_names(pools)}")
        deadline = time.monotonic() + request.hold_seconds
        while context.is_active() and not released.wait(min(_POLL_S, _left(deadline))):
            if _left(deadline) <= 0:
                log.warning("startup_lock.expired", holder=request.holder, pools=sorted(pools))
                self._locks.release(ticket)
                yield _event(
                    "Expired",
                    state,
                    f"released {_names(pools)} after {request.hold_seconds} s",
                )
                return

    def _validate(
        self, request: pb.HoldStartupLockRequest, context: grpc.ServicerContext
    ) -> frozenset[str]:
        known = self._pools()
        problem = None
        if not request.memory_pools:
            problem = "memory_pools: name at least one memory pool of the allocation"
        elif len(set(request.memory_pools)) != len(request.memory_pools):
            problem = "memory_pools: a pool is listed twice"
        elif unknown := [p for p in request.memory_pools if p not in known]:
            problem = (
                f"memory_pools: {', '.join(unknown)} not a memory pool of this node; "
                f"pools: {', '.join(sorted(known)) or 'none (no GPUs read yet)'}"
            )
        elif not request.holder or len(request.holder) > _MAX_HOLDER_CHARS:
            problem = f"holder: required, at most {_MAX_HOLDER_CHARS} characters"
        elif not 1 <= request.hold_seconds <= MAX_HOLD_S:
            problem = f"hold_seconds: {request.hold_seconds} is not within 1-{MAX_HOLD_S}"
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        return frozenset(request.memory_pools)


def _event(state: str, lock: LockState, message: str) -> pb.StartupLockEvent:
    return pb.StartupLockEvent(
        state=state, position=lock.position, holders=list(lock.holders), message=message
    )


def _who(state: LockState) -> str:
    if state.holders:
        return ", ".join(state.holders)
    return f"{state.position - 1} earlier request(s)"


def _names(pools: frozenset[str]) -> str:
    return ", ".join(sorted(pools))


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
