"""A minimal HTTPS admission webhook on 127.0.0.1, to prove the apiserver calls webhooks.

It denies every object carrying the label DENY_LABEL and allows the rest. It speaks the
admission.k8s.io/v1 AdmissionReview protocol; the project's real webhook lives in extender/.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hack.devcluster.pki import KeyPair

DENY_LABEL = "mipart.io/test-deny"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        labels = (request.get("object") or {}).get("metadata", {}).get("labels") or {}
        response: dict[str, Any] = {"uid": request["uid"], "allowed": DENY_LABEL not in labels}
        if not response["allowed"]:
            response["status"] = {"code": 403, "message": f"denied by test webhook: {DENY_LABEL}"}
        body = json.dumps({**review, "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args  # keep pytest's output clean


class WebhookServer:
    """Serves on a free loopback port in a thread; use as a context manager."""

    def __init__(self, serving: KeyPair) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(serving.cert), str(serving.key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"https://{host!s}:{port}/validate"

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
