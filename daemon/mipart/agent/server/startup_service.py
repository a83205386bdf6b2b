"""StartupService: the start-up lock over gRPC, held for as long as the caller's call is open.

One service per pod, on a socket only that pod's container has mounted (StartupSockets): the
caller is that pod, whatever name it gives, it may take only the memory pools of its own
partitions, and it has one call at a time. A tenant can therefore hold nothing but what its
own instance would, and only while its process lives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

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
    def __init__(self, locks: StartupLocks, identity: str, pools: frozenset[str]) -> None:
        self._locks = locks
        self.identity = identity  # namespace/name of the pod this socket was made for
        self.pools = pools  # the memory pools of its partitions
        self._busy = threading.Lock()  # held by the one call in progress

    def HoldStartupLock(
        self, request: pb.HoldStartupLockRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StartupLockEvent]:
        pools = self._validate(request, context)
        if not self._busy.acquire(blocking=False):
            log.warning("startup_lock.refused_second_call", pod=self.identity)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.identity} already holds or waits for the start-up lock: one call at a "
                "time per pod",
            )
        if request.holder and request.holder != self.identity:
            log.info("startup_lock.holder_named", pod=self.identity, named=request.holder)
        ticket = self._locks.enqueue(pools, self.identity)
        released = threading.Event()
        once = threading.Lock()

        def release() -> None:
            if not once.acquire(blocking=False):
                return  # the callback and the generator's end both come here
            self._locks.release(ticket)
            self._busy.release()
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
        log.info("startup_lock.queued", holder=self.identity, pools=sorted(pools))
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
        log.info("startup_lock.granted", holder=self.identity, pools=sorted(pools))
        yield _event("Granted", state, f"holding {_names(pools)}")
        deadline = time.monotonic() + request.hold_seconds
        while context.is_active() and not released.wait(min(_POLL_S, _left(deadline))):
            if _left(deadline) <= 0:
                log.warning("startup_lock.expired", holder=self.identity, pools=sorted(pools))
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
        problem = None
        if not request.memory_pools:
            problem = "memory_pools: name at least one memory pool of the allocation"
        elif len(set(request.memory_pools)) != len(request.memory_pools):
            problem = "memory_pools: a pool is listed twice"
        elif unknown := [p for p in request.memory_pools if p not in self.pools]:
            problem = (
                f"memory_pools: {', '.join(unknown)} not a memory pool of {self.identity}'s "
                f"partitions; its pools: {', '.join(sorted(self.pools))}"
            )
        elif len(request.holder) > _MAX_HOLDER_CHARS:
            problem = f"holder: at most {_MAX_HOLDER_CHARS} characters"
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
