"""Stands in for ``vllm serve`` where no GPU exists: records when it started, "loads" for
MIPART_FAKE_LOAD_SECONDS, then answers /health on --port and records when it became healthy.
Events go to MIPART_FAKE_LOG as ``<event> <unix time> <port>`` lines."""

import http.server
import os
import sys
import time


def record(event: str, port: int) -> None:
    with open(os.environ["MIPART_FAKE_LOG"], "a") as log:
        log.write(f"{event} {time.time():.3f} {port}\n")


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


port = int(sys.argv[sys.argv.index("--port") + 1])
record("start", port)
time.sleep(float(os.environ.get("MIPART_FAKE_LOAD_SECONDS", "2")))
server = http.server.HTTPServer(("127.0.0.1", port), Health)
record("healthy", port)
server.serve_forever()
