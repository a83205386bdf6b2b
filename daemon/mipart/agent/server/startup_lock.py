"""The node's start-up locks: one per memory pool, granted first come, first served.

A vLLM instance sizes its KV cache from how much device-wide free memory drops while it starts
(docs/facts-vllm.md#start-up-measurement): a neighbour starting on the same pool at the same
time is charged to it, or makes it fail. So instances on one pool start one after the other.

A request names every pool of its allocation and is granted all of them at once, or waits.
Waiting is strictly first come, first served per pool: a request is granted only when none of
its pools is held and no earlier request waits for one of them. That keeps a tensor-parallel
instance (several pools) from starving behind a stream of single-pool ones, and, as every
request takes all its pools in one step, two requests can never each hold what the other needs.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class Ticket:
    number: int
    pools: frozenset[str]
    holder: str
    granted_at: float | None = None
    released: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class LockState:
    granted: bool
    position: int  # while waiting: 1 = next in line for its pools
    holders: tuple[str, ...]  # who holds one of the ticket's pools now


class StartupLocks:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._numbers = itertools.count(1)
        self._waiting: list[Ticket] = []  # in arrival order
        self._held: dict[str, Ticket] = {}  # pool -> ticket holding it

    def enqueue(self, pools: frozenset[str], holder: str) -> Ticket:
        with self._cond:
            ticket = Ticket(next(self._numbers), pools, holder)
            self._waiting.append(ticket)
            self._grant()
            return ticket

    def wait(self, ticket: Ticket, version: LockState | None, timeout_s: float) -> LockState:
        """The ticket's state once it differs from ``version``, or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                state = self._state(ticket)
                left = deadline - time.monotonic()
                if state != version or left <= 0:
                    return state
                self._cond.wait(left)

    def release(self, ticket: Ticket) -> None:
        """Give the pools back (or leave the queue). Safe to call more than once."""
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            for pool in ticket.pools:
                if self._held.get(pool) is ticket:
                    del self._held[pool]
            self._grant()
            self._cond.notify_all()

    def holders(self) -> dict[str, str]:
        """Pool -> holder, for status and logs."""
        with self._cond:
            return {pool: ticket.holder for pool, ticket in self._held.items()}

    def _grant(self) -> None:
        claimed: set[str] = set()  # pools an earlier waiter is queued for
        for ticket in list(self._waiting):
            free = not any(pool in self._held for pool in ticket.pools)
            if free and not ticket.pools & claimed:
                self._waiting.remove(ticket)
                ticket.granted_at = time.monotonic()
                for pool in ticket.pools:
                    self._held[pool] = ticket
                self._cond.notify_all()
            claimed |= ticket.pools

    def _state(self, ticket: Ticket) -> LockState:
        holders = tuple(
            dict.fromkeys(
                self._held[p].holder
                for p in sorted(ticket.pools)
                if p in self._held and self._held[p] is not ticket
            )
        )
        if ticket.granted_at is not None:
            return LockState(True, 0, holders)
        ahead = 0
        for other in self._waiting:
            if other is ticket:
                break
            if other.pools & ticket.pools:
                ahead += 1
        return LockState(False, ahead + 1, holders)
