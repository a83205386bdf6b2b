"""The JSON server's HTTP framing: what kube-scheduler and the API server send, and what a
broken or hostile client might."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mipart.cluster.http import MAX_FIELDS, JsonServer


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
