"""The JSON server: connections on one asyncio loop, routes on a few threads.

A thread per connection (the stdlib's ThreadingHTTPServer, used before) let any caller hold a
thread for as long as it liked: one byte of a declared 16 MiB body, a TLS handshake never
begun, a thousand idle connections. Here a connection is a coroutine on one event loop, every
wait on the caller has a deadline (``Limits``), and a body is admitted against a byte budget
before it is read. Only a complete request reaches a route thread, so the threads are
never held by a slow caller, only by the routes' own work.

The hot path stays short: kube-scheduler keeps one connection alive per extender and sends
calls on it one after another; each is read off the socket by the loop, parsed and answered
by a route thread (orjson keeps a 5000-node body well under a millisecond), and written back in
one write.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import structlog

from mipart.cluster.http._framing import (
    CONTINUE,
    MAX_FIELDS,
    Refusal,
    RequestHead,
    add_field,
    body_length,
    parse_request_line,
    reply,
)
from mipart.cluster.http._limits import BodyBudget, Limits

log = structlog.get_logger("mipart.cluster.http")


class BadRequest(Exception):
    """The body is not what the route accepts; answered 400 with the message."""


JsonRoute = Callable[[Any], Any]
RawRoute = Callable[[], tuple[int, str, bytes]]
# Called with the reason each time the server gives up on a caller (a metric's inc).
DropHook = Callable[[str], None]

_DROP_LOG_INTERVAL_S = 10.0
_CLOSE_TIMEOUT_S = 1.0
# asyncio gives every TLS connection a 256 KiB receive buffer (SSLProtocol.max_size): 2000
# connections held 540 MiB. A TLS record is at most 16 KiB, so 32 KiB reads lose nothing
# that matters here, and 2000 connections hold 64 MiB.
_TLS_READ_BUFFER = 32 * 1024
# The stream buffer. Lines are checked against MAX_FIELD_LINE; this only has to be larger.
_STREAM_LIMIT = 64 * 1024


class JsonServer:
    """POST routes take and return JSON; GET routes return (status, content type, bytes).

    The port is bound when this is made (a port in use fails at once); ``start`` serves it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        on_drop: DropHook | None = None,
    ) -> None:
        self.post_routes: dict[str, JsonRoute] = {}
        self.get_routes: dict[str, RawRoute] = {}
        # GET routes answered only to callers on this host's loopback (debug pages that show
        # what others' pods hold), whatever address the server listens on.
        self.loopback_only: set[str] = set()
        # POST routes that never wait on I/O and finish in a millisecond or so (the extender's
        # filter and prioritize): they run on the loop's own thread, which saves the two
        # thread hand-offs of a route thread (a third of the server's time per call).
        self.inline_routes: set[str] = set()
        self.limits = limits or Limits()
        self._tls = tls
        self._on_drop = on_drop or (lambda _reason: None)
        # Callers given up on since the last log line, by reason: one line per interval at
        # most, however hard the server is pressed.
        self._dropped: Counter[str] = Counter()
        self._dropped_logged_at = 0.0
        if tls is not None:
            asyncio.sslproto.SSLProtocol.max_size = _TLS_READ_BUFFER
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=self.limits.backlog)
        self._budget = BodyBudget(self.limits)
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http-route")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def body_bytes_held(self) -> int:
        """Bytes of the body budget that admitted bodies hold now."""
        return self._budget.held

    def start(self) -> None:
        # The loop exists before the thread does, so stop() can reach it at once.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop,), name="http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: open connections are closed, routes running finish on their own."""
        loop = self._loop
        if loop is None or self._thread is None:
            self._sock.close()  # bound, never served
        else:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _drop(self, reason: str) -> None:
        self._on_drop(reason)
        self._dropped[reason] += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= _DROP_LOG_INTERVAL_S:
            log.warning("http.callers_dropped", **self._dropped)
            self._dropped.clear()
            self._dropped_logged_at = now

    # -- the loop -----------------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet)
        self._sock.setblocking(False)
        accepting = loop.create_task(self._accept())
        try:
            loop.run_forever()
        finally:
            accepting.cancel()
            for task in list(self._connections):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))  # let the cancellations run
            self._sock.close()
            loop.close()

    async def _accept(self) -> None:
        """Accept at a bounded rate. A TLS handshake costs the loop about half a millisecond;
        a thousand callers connecting at once would otherwise hold up, for half a second,
        every request on the connections already open. Callers past the pace wait in the
        kernel's backlog."""
        loop = asyncio.get_running_loop()
        pace = _Pace(self.limits.accept_rate_per_s, self.limits.accept_burst)
        while True:
            await pace.take()
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError:  # out of file descriptors and the like: back off, do not spin
                self._drop("accept_failed")
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._connection(conn))
            self._connections.add(task)  # counted from now, and kept from the collector
            task.add_done_callback(self._connections.discard)

    async def _connection(self, conn: socket.socket) -> None:
        writer = None
        try:
            if len(self._connections) > self.limits.max_connections:
                self._drop("connections")
                conn.close()
                return
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    conn,
                    ssl=self._tls,
                    ssl_handshake_timeout=self.limits.handshake_timeout_s if self._tls else None,
                )
            except OSError:  # the TLS handshake failed or timed out (ssl.SSLError is one)
                self._drop("handshake")
                conn.close()
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            peer = str(writer.get_extra_info("peername")[0])
            while await self._one_request(reader, writer, peer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            self._drop("reset")
        except TimeoutError:
            self._drop("write_timeout")
        finally:
            if writer is not None:
                await _close(writer)

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> bool:
        """Serve one request; whether the connection stays open for another."""
        limits = self.limits
        try:
            async with asyncio.timeout(limits.idle_timeout_s):
                first = await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            return False  # the caller closed between requests, as it may
        except TimeoutError:
            self._drop("idle")
            return False
        try:
            async with asyncio.timeout(limits.head_timeout_s):
                head = await _read_head(reader, first)
        except TimeoutError:
            self._drop("head_timeout")
            message = f"request head not complete within {limits.head_timeout_s:g} s"
            await self._send(writer, 408, {"Error": message}, close=True)
            return False
        except Refusal as refusal:
            await self._send(writer, refusal.status, {"Error": refusal.message}, close=True)
            return False
        if head.method == "POST":
            return await self._post(reader, writer, head)
        if head.method == "GET":
            return await self._get(writer, head, peer)
        await self._send(writer, 501, {"Error": f"{head.method} is not served"}, close=True)
        return False

    async def _get(self, writer: asyncio.StreamWriter, head: RequestHead, peer: str) -> bool:
        # A body on a GET is never read: close after, so it is not taken for a request.
        close = not head.keep_alive or head.sends_body
        route = self.get_routes.get(head.path)
        if route is None:
            await self._send(writer, 404, {"Error": f"no such route: GET {head.path}"}, close=close)
        elif head.path in self.loopback_only and not _is_loopback(peer):
            message = f"GET {head.path} answers only callers on loopback"
            await self._send(writer, 403, {"Error": message}, close=close)
        else:
            loop = asyncio.get_running_loop()
            status, content_type, payload = await loop.run_in_executor(self._pool, _raw, route)
            await self._write(writer, reply(status, content_type, payload, close=close))
        return not close

    async def _post(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: RequestHead
    ) -> bool:
        close = not head.keep_alive
        route = self.post_routes.get(head.path)
        if route is None:
            # The body is not read: close after, so it is not taken for a request.
            await self._send(writer, 404, {"Error": f"no such route: POST {head.path}"}, close=True)
            return False
        try:
            length = body_length(head)
        except Refusal as refusal:
            await self._send(writer, refusal.status, {"Error": refusal.message}, close=True)
            return False
        if not self._budget.admit(length):
            self._drop("body_budget")
            message = (
                f"busy: {self._budget.held} bytes of request bodies are being read or "
                f"answered; a body of {length} bytes does not fit now, retry"
            )
            await self._send(writer, 503, {"Error": message}, close=True)
            return False
        try:
            if head.expects_continue:
                await self._write(writer, CONTINUE)
            try:
                async with asyncio.timeout(self.limits.body_timeout_s):
                    body = await reader.readexactly(length) if length else b""
            except TimeoutError:
                self._drop("body_timeout")
                message = (
                    f"body of {length} bytes not received within {self.limits.body_timeout_s:g} s"
                )
                await self._send(writer, 408, {"Error": message}, close=True)
                return False
            if head.path in self.inline_routes:
                status, payload = _answer(route, body, head.path)
            else:
                loop = asyncio.get_running_loop()
                status, payload = await loop.run_in_executor(
                    self._pool, _answer, route, body, head.path
                )
            del body
        finally:
            self._budget.release(length)
        await self._write(writer, reply(status, "application/json", payload, close=close))
        return not close

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, payload: Any, *, close: bool
    ) -> None:
        await self._write(
            writer, reply(status, "application/json", orjson.dumps(payload), close=close)
        )

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout_s):
            await writer.drain()


class _Pace:
    """A token bucket: ``rate`` a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close after the last reply is flushed (an abort would drop it); a caller that does not
    take it, or never answers TLS's close_notify, is aborted after a second."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (TimeoutError, OSError):  # ssl.SSLError among them
        writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader, first: bytes) -> RequestHead:
    """The request line and header fields, read in one search for the blank line."""
    try:
        raw = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise Refusal(431, f"request head too large (at most {_STREAM_LIMIT} bytes)") from None
    request_line, *lines = raw[:-4].split(b"\r\n")
    method, path, version = parse_request_line(request_line)
    if len(lines) > MAX_FIELDS:
        raise Refusal(431, f"too many header lines (at most {MAX_FIELDS})")
    fields: dict[str, str] = {}
    for line in lines:
        add_field(fields, line)
    return RequestHead(method, path, version, fields)


def _answer(route: JsonRoute, body: bytes, path: str) -> tuple[int, bytes]:
    """On a route thread: parse, run the route, encode; the status and the reply."""
    try:
        return 200, orjson.dumps(route(orjson.loads(body) if body else None))
    except (BadRequest, orjson.JSONDecodeError, ValueError) as err:
        return 400, orjson.dumps({"Error": f"bad request: {err}"})
    except Exception as err:  # never a crash, never a 5xx the caller cannot read
        log.exception("http.route_failed", path=path)
        return 200, orjson.dumps({"Error": f"internal error: {type(err).__name__}: {err}"})


def _raw(route: RawRoute) -> tuple[int, str, bytes]:
    try:
        return route()
    except Exception as err:
        log.exception("http.route_failed")
        return 500, "text/plain", f"internal error: {type(err).__name__}: {err}".encode()


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 caller of a dual-stack socket
    return ip.is_loopback


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would print about a connection it gave up on (a handshake that failed or
    timed out): a caller's fault, logged at debug."""
    log.debug(
        "http.connection_error", message=context.get("message"), error=str(context.get("exception"))
    )
