"""The JSON server's HTTP framing: what kube-scheduler and the API server send, and what a
broken or hostile client might."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mipart.cluster.http import MAX_FIELDS, JsonServer, Limits


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = JsonServer("127.0.0.1", 0)
    server.post_routes["/echo"] = lambda body: {"got": body}
    server.start()
    yield server.port
    server.stop()


def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        conn.sendall(raw)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            received += b"<still open>"
        return received


def post(body: Any, *extra: str, version: str = "HTTP/1.1") -> bytes:
    payload = json.dumps(body).encode()
    head = [f"POST /echo {version}", "Host: x", f"Content-Length: {len(payload)}", *extra]
    return "\r\n".join([*head, "", ""]).encode() + payload


def replies(received: bytes) -> list[tuple[str, dict[str, str], Any]]:
    """(status line, headers, JSON body) of each reply in a stream."""
    out = []
    rest = received.removesuffix(b"<still open>")
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        body, rest = rest[:length], rest[length:]
        out.append((status, headers, json.loads(body)))
    return out


def test_keep_alive_serves_requests_one_after_another(port: int) -> None:
    received = exchange(port, post({"n": 1}) + post({"n": 2}))
    assert received.endswith(b"<still open>")
    assert [(s, b) for s, _, b in replies(received)] == [
        ("HTTP/1.1 200 OK", {"got": {"n": 1}}),
        ("HTTP/1.1 200 OK", {"got": {"n": 2}}),
    ]


@pytest.mark.parametrize(
    ("extra", "version"), [(("Connection: close",), "HTTP/1.1"), ((), "HTTP/1.0")]
)
def test_the_connection_closes_when_the_client_asks(extra: tuple[str, ...], version: str) -> None:
    server = JsonServer("127.0.0.1", 0)
    server.post_routes["/echo"] = lambda body: {"got": body}
    server.start()
    try:
        received = exchange(server.port, post({"n": 1}, *extra, version=version))
    finally:
        server.stop()
    assert not received.endswith(b"<still open>")
    ((status, headers, body),) = replies(received)
    assert (status, headers["connection"], body) == ("HTTP/1.1 200 OK", "close", {"got": {"n": 1}})


def test_expect_100_continue_is_answered_before_the_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        conn.sendall(b"{}")
        assert conn.recv(1000).endswith(b'{"got":{}}')


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b"POST /echo\r\n\r\n", 400, "bad request line"),
        (b"POST /echo HTTP/2.0\r\nContent-Length: 0\r\n\r\n", 505, "HTTP/2.0 is not served"),
        (b"POST /echo HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad header line"),
        (b"POST /echo HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}", 400, "bad header line"),
        (
            b"POST /echo HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_FIELDS + 1) + b"\r\n",
            431,
            "too many header lines",
        ),
        (b"POST /echo HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", 431, "too long"),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            411,
            "Content-Length",
        ),
        (b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "digits only"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}", 400, "'+2' is not a number"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 0_2\r\n\r\n{}", 400, "'0_2' is not a number"),
        (
            "POST /echo HTTP/1.1\r\nContent-Length: \u0662\r\n\r\n{}".encode("utf-8"),
            400,
            "is not a number",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            400,
            "repeated Content-Length header",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 9\r\n\r\n{}",
            400,
            "repeated content-length header",
        ),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{}", 400, "at most"),
    ],
)
def test_malformed_requests_get_an_error_and_the_connection_closes(
    port: int, raw: bytes, status: int, says: str
) -> None:
    received = exchange(port, raw)
    assert received.startswith(f"HTTP/1.1 {status} ".encode()), received[:200]
    assert says.encode() in received
    # Framing the server cannot trust, or a body it did not read: it closes the connection.
    assert not received.endswith(b"<still open>")


def test_loopback_only_pages_refuse_callers_elsewhere() -> None:
    """A debug page answers on loopback, and says why to a caller on another address of the
    host, though the server listens on all of them."""
    # The address this host would send from (a UDP connect sends nothing).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("this host has no route off loopback")
        other = probe.getsockname()[0]
    if other.startswith("127."):
        pytest.skip("this host has no address but loopback")
    server = JsonServer("0.0.0.0", 0)
    server.get_routes["/debug/page"] = lambda: (200, "text/plain", b"secret")
    server.loopback_only.add("/debug/page")
    server.start()
    try:
        request = b"GET /debug/page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
            conn.sendall(request)
            local = conn.recv(65536)
        assert local.startswith(b"HTTP/1.1 200")
        assert local.endswith(b"secret")
        with socket.create_connection((other, server.port), timeout=2) as conn:
            conn.sendall(request)
            remote = conn.recv(65536)
        ((status, _, body),) = replies(remote)
        assert status.startswith("HTTP/1.1 403")
        assert body == {"Error": "GET /debug/page answers only callers on loopback"}
    finally:
        server.stop()


# -- callers that hold on: every wait has a deadline, bodies a budget ------------------------

QUICK = Limits(idle_timeout_s=0.3, head_timeout_s=0.3, body_timeout_s=0.3, handshake_timeout_s=0.3)


@contextlib.contextmanager
def serving(limits: Limits, **post: Any) -> Iterator[JsonServer]:
    server = JsonServer("127.0.0.1", 0, limits=limits)
    server.post_routes["/echo"] = lambda body: {"got": body}
    server.post_routes.update(post)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_closed(conn: socket.socket, within_s: float = 3.0) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    conn.settimeout(within_s)
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.01)


def test_a_caller_that_dribbles_its_head_gets_408_and_is_cut_off() -> None:
    with serving(QUICK) as server, socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nX-Slow: ")
        received = wait_closed(conn)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"request head not complete within 0.3 s" in received


def test_an_idle_kept_alive_connection_is_closed_without_a_reply() -> None:
    with serving(QUICK) as server, socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(post({"n": 1}))
        ((status, _, _),) = replies(conn.recv(65536))
        assert status == "HTTP/1.1 200 OK"
        assert wait_closed(conn) == b""


def test_a_half_sent_body_gets_408_and_holds_no_route_thread() -> None:
    # One route thread only: were it waiting on the slow body, the second caller would wait.
    limits = Limits(body_timeout_s=1.0, workers=1)
    with serving(limits) as server, socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        until(lambda: server.body_bytes_held == 1000)
        assert replies(exchange(server.port, post({"n": 2}, "Connection: close")))[0][2] == {
            "got": {"n": 2}
        }
        received = wait_closed(slow)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"body of 1000 bytes not received within 1 s" in received


def test_large_bodies_share_a_bounded_part_of_the_body_budget() -> None:
    """While one large body is being read, a second is refused with 503 at once, before a byte
    of it is buffered; bodies of the usual size still go through; once the first is answered,
    the budget is free again."""
    limits = Limits(body_budget_bytes=300, large_body_bytes=50, large_budget_bytes=150)
    large = json.dumps({"pad": "x" * 100}).encode()
    head = f"POST /echo HTTP/1.1\r\nContent-Length: {len(large)}\r\n\r\n".encode()
    with serving(limits) as server, socket.create_connection(("127.0.0.1", server.port)) as first:
        first.sendall(head + large[:10])
        until(lambda: server.body_bytes_held == len(large))
        refused = exchange(server.port, head + large)
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert f"a body of {len(large)} bytes does not fit now, retry".encode() in refused
        assert not refused.endswith(b"<still open>")
        assert replies(exchange(server.port, post({"n": 3})))[0][2] == {"got": {"n": 3}}
        first.sendall(large[10:])
        ((status, _, _),) = replies(first.recv(65536))
        assert status == "HTTP/1.1 200 OK"
        assert replies(exchange(server.port, head + large))[0][0] == "HTTP/1.1 200 OK"


def test_connections_past_the_limit_are_closed_as_they_come() -> None:
    drops: list[str] = []
    server = JsonServer("127.0.0.1", 0, limits=Limits(max_connections=2), on_drop=drops.append)
    server.post_routes["/echo"] = lambda body: {"got": body}
    server.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port)) as one,
            socket.create_connection(("127.0.0.1", server.port)) as two,
        ):
            until(lambda: server.open_connections == 2)
            with socket.create_connection(("127.0.0.1", server.port)) as third:
                assert wait_closed(third) == b""
            for conn in (one, two):
                conn.sendall(post({"n": 4}))
                assert replies(conn.recv(65536))[0][2] == {"got": {"n": 4}}
    finally:
        server.stop()
    assert drops == ["connections"]


def test_a_failing_get_route_answers_500_and_other_methods_501(port: int) -> None:
    server = JsonServer("127.0.0.1", 0)
    server.get_routes["/broken"] = lambda: {}["missing"]  # type: ignore[index]
    server.start()
    try:
        broken = exchange(server.port, b"GET /broken HTTP/1.1\r\nConnection: close\r\n\r\n")
    finally:
        server.stop()
    assert broken.startswith(b"HTTP/1.1 500 ")
    assert b"internal error: KeyError" in broken
    other = exchange(port, b"PUT /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    assert other.startswith(b"HTTP/1.1 501 ")
    assert b"PUT is not served" in other
