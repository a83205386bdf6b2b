"""A small threaded HTTP/1.1 server with JSON routes, for the extender and the webhook.

kube-scheduler keeps one connection alive per extender and sends filter/prioritize calls on it
one at a time, so a thread per connection (stdlib) costs nothing that matters; orjson keeps
the per-call parse of a 5000-node body well under a millisecond.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import structlog

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 2**20


class BadRequest(Exception):
    """The body is not what the route accepts; answered 400 with the message."""


JsonRoute = Callable[[Any], Any]
RawRoute = Callable[[], tuple[int, str, bytes]]


class JsonServer:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        self.post_routes: dict[str, JsonRoute] = {}
        self.get_routes: dict[str, RawRoute] = {}
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
        # A reply goes out in two writes (headers, then body). With Nagle's algorithm the body
        # waits for the ACK of the headers, which the caller delays by up to 40 ms on a
        # kept-alive connection: every filter and prioritize call took 40+ ms
        # (hack/bench/extender_latency.py).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()
            super().setup()

        def do_POST(self) -> None:
            route = server.post_routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._reply(404, {"Error": f"no such route: POST {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length < 0 or length > MAX_BODY_BYTES:
                    raise BadRequest(f"body of {length} bytes; at most {MAX_BODY_BYTES}")
                body = orjson.loads(self.rfile.read(length)) if length else None
                self._reply(200, route(body))
            except (BadRequest, orjson.JSONDecodeError, ValueError) as err:
                self._reply(400, {"Error": f"bad request: {err}"})
            except Exception as err:  # never a crash, never a 5xx the caller cannot read
                log.exception("http.route_failed", path=self.path)
                self._reply(200, {"Error": f"internal error: {type(err).__name__}: {err}"})

        def do_GET(self) -> None:
            route = server.get_routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._reply(404, {"Error": f"no such route: GET {self.path}"})
                return
            status, content_type, payload = route()
            self._send(status, content_type, payload)

        def _reply(self, status: int, payload: Any) -> None:
            self._send(status, "application/json", orjson.dumps(payload))

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # access logs would cost more than the calls; metrics count them

    return Handler
