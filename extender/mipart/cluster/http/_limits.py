"""What one server lets its callers hold: connections, time, and bytes of request bodies."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    # Connections waiting to be accepted. Five (the stdlib's) made 1000 callers at once retry
    # their SYNs for seconds; the kernel caps this at net.core.somaxconn.
    backlog: int = 1024
    # Open connections; one more is closed as soon as it is accepted. An idle kept-alive
    # connection costs a few KiB here, no thread.
    max_connections: int = 4096
    # New connections accepted a second, on average, and at once. Both callers keep their
    # connections open, so this only paces floods (see JsonServer._accept).
    accept_rate_per_s: float = 500.0
    accept_burst: int = 10
    # A TLS client must finish its handshake within this.
    handshake_timeout_s: float = 5.0
    # A kept-alive connection may sit between requests this long. Go's HTTP clients (the
    # scheduler's extender client, the API server's webhook client) drop idle connections
    # after 90 s; waiting longer means the client always closes first, so a request is never
    # written into a connection this server is closing.
    idle_timeout_s: float = 120.0
    # From a request's first byte to the end of its head, and for its body. Both callers send
    # a request in one write; a caller that dribbles (slowloris) is cut off.
    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    # A reply the caller does not read within this closes the connection.
    write_timeout_s: float = 10.0
    # Threads that run routes. Routes are short and hold the interpreter lock, except those
    # that call the API server (bind), which several may do at once.
    workers: int = 8
    # Bytes of request bodies read or being read and not yet answered, all connections
    # together: a body is admitted only if its declared length fits, so memory is bounded
    # before a byte of it arrives. Bodies above ``large_body_bytes`` may hold at most
    # ``large_budget_bytes`` of it together, which leaves the rest to the callers' usual
    # bodies (an extender call at 5000 nodes is about 120 KiB, an admission review a few).
    body_budget_bytes: int = 32 * MIB
    large_body_bytes: int = 1 * MIB
    large_budget_bytes: int = 16 * MIB


class BodyBudget:
    """The bytes of ``Limits.body_budget_bytes`` that admitted bodies hold. Used from the
    server's event loop only, so it needs no lock."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.held = 0
        self.held_large = 0

    def admit(self, length: int) -> bool:
        large = length > self._limits.large_body_bytes
        if self.held + length > self._limits.body_budget_bytes:
            return False
        if large and self.held_large + length > self._limits.large_budget_bytes:
            return False
        self.held += length
        if large:
            self.held_large += length
        return True

    def release(self, length: int) -> None:
        self.held -= length
        if length > self._limits.large_body_bytes:
            self.held_large -= length
