"""A small threaded HTTP/1.1 server with JSON routes, for the extender and the webhook.

kube-scheduler keeps one connection alive per extender and sends filter/prioritize calls on it
one at a time, so a thread per connection (stdlib) costs nothing that matters; orjson keeps
the per-call parse of a 5000-node body well under a millisecond.
"""

from __future__ import annotations

import io
import ipaddress
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import structlog

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 2**20
MAX_FIELD_LINE = 8192
MAX_FIELDS = 100
# The fields that frame a body: each may come once.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


class BadRequest(Exception):
    """The body is not what the route accepts; answered 400 with the message."""


JsonRoute = Callable[[Any], Any]
RawRoute = Callable[[], tuple[int, str, bytes]]


class JsonServer:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        self.post_routes: dict[str, JsonRoute] = {}
        self.get_routes: dict[str, RawRoute] = {}
        # GET routes answered only to callers on this host's loopback (debug pages that show
        # what others' pods hold), whatever address the server listens on.
        self.loopback_only: set[str] = set()
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            # The handshake happens in the connection's thread, not in the accept loop.
            self.httpd.socket = tls.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(server: JsonServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the scheduler reuses its connection
        # Replies go out in one write (_send), but the stdlib's error replies in two (headers,
        # then body). With Nagle's algorithm a second write waits for the ACK of the first,
        # which the caller delays by up to 40 ms on a kept-alive connection: every call took
        # 40+ ms when replies were written that way (hack/bench/extender_latency.py).
        disable_nagle_algorithm = True
        raw_requestline: bytes  # set by handle_one_request
        fields: dict[str, str]  # set by parse_request

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()
            super().setup()

        def parse_request(self) -> bool:
            """The stdlib's parse_request, with the headers read into a dict instead of an
            email.message: its parser was a sixth of the extender's CPU per scheduled pod
            (three calls each), and these routes read two headers."""
            self.command = ""
            self.request_version = "HTTP/1.0"  # until the request line says otherwise
            self.close_connection = True
            self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
            words = self.requestline.split()
            if len(words) != 3 or not words[2].startswith("HTTP/"):
                self.send_error(400, f"bad request line {self.requestline[:80]!r}")
                return False
            self.command, self.path, self.request_version = words
            if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
                self.send_error(505, f"{self.request_version} is not served")
                return False
            fields = _read_fields(self.rfile)
            if isinstance(fields, str):
                self.send_error(431 if "too" in fields else 400, fields)
                return False
            self.fields = fields
            connection = fields.get("connection", "").lower()
            if self.request_version == "HTTP/1.1":
                self.close_connection = connection == "close"
            else:
                self.close_connection = connection != "keep-alive"
            if fields.get("expect", "").lower() == "100-continue":
                return self.handle_expect_100()
            return True

        def do_POST(self) -> None:
            route = server.post_routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._reply(404, {"Error": f"no such route: POST {self.path}"})
                return
            if "transfer-encoding" in self.fields:
                # What follows is not framed by a length this server reads: close after.
                self.close_connection = True
                self._reply(411, {"Error": "send the body with a Content-Length"})
                return
            length = _content_length(self.fields.get("content-length", "0"))
            if isinstance(length, str):
                # The body's end is unknown, or the body stays unread: close after.
                self.close_connection = True
                self._reply(400, {"Error": f"bad request: {length}"})
                return
            try:
                body = orjson.loads(self.rfile.read(length)) if length else None
                self._reply(200, route(body))
            except (BadRequest, orjson.JSONDecodeError, ValueError) as err:
                self._reply(400, {"Error": f"bad request: {err}"})
            except Exception as err:  # never a crash, never a 5xx the caller cannot read
                log.exception("http.route_failed", path=self.path)
                self._reply(200, {"Error": f"internal error: {type(err).__name__}: {err}"})

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            route = server.get_routes.get(path)
            if route is None:
                self._reply(404, {"Error": f"no such route: GET {self.path}"})
                return
            if path in server.loopback_only and not _is_loopback(self.client_address[0]):
                self._reply(403, {"Error": f"GET {path} answers only callers on loopback"})
                return
            status, content_type, payload = route()
            self._send(status, content_type, payload)

        def _reply(self, status: int, payload: Any) -> None:
            self._send(status, "application/json", orjson.dumps(payload))

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            """Status line, headers and body in one write."""
            reason = self.responses.get(status, ("",))[0]
            lines = [
                f"{self.protocol_version} {status} {reason}",
                f"Date: {self.date_time_string()}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(payload)}",
            ]
            if self.close_connection:
                lines.append("Connection: close")
            head = "\r\n".join([*lines, "", ""]).encode("latin-1")
            self.wfile.write(head + payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # access logs would cost more than the calls; metrics count them

    return Handler


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 caller of a dual-stack socket
    return ip.is_loopback


def _content_length(value: str) -> int | str:
    """RFC 9110's Content-Length, 1*DIGIT, up to MAX_BODY_BYTES; or what is wrong with it.
    int() would also take "+38", "3_8" and non-ASCII digits, which another reader of the same
    bytes may frame differently."""
    if not (value.isascii() and value.isdigit()):
        return f"Content-Length {value[:20]!r} is not a number of bytes (digits only)"
    length = int(value)
    if length > MAX_BODY_BYTES:
        return f"body of {length} bytes; at most {MAX_BODY_BYTES}"
    return length


def _read_fields(rfile: io.BufferedIOBase) -> dict[str, str] | str:
    """Header fields up to the blank line, by lower-case name; or what is wrong with them."""
    fields: dict[str, str] = {}
    for _ in range(MAX_FIELDS + 1):
        line = rfile.readline(MAX_FIELD_LINE + 1)
        if len(line) > MAX_FIELD_LINE:
            return f"header line too long (at most {MAX_FIELD_LINE} bytes)"
        if line in (b"\r\n", b"\n", b""):
            return fields
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not name or name != name.strip():
            return f"bad header line {line[:80]!r}"
        key = name.lower()
        if key in _FRAMING and key in fields:
            # Two lengths leave the body's end to whoever reads them: a request smuggled
            # past one reader to the next (RFC 9112, section 6.3).
            return f"repeated {name} header"
        fields[key] = value.strip()
    return f"too many header lines (at most {MAX_FIELDS})"
