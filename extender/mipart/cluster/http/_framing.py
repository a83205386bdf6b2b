"""HTTP/1.1 request heads and replies, as strict as the two callers need and no looser.

kube-scheduler's extender client and the API server's webhook client (both Go net/http) send a
request line, a handful of header fields and a body framed by Content-Length. Anything else is
refused with a status and a message that says what was wrong, and the connection is closed:
once the framing is in doubt, the next request's first byte is too.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

MAX_BODY_BYTES = 16 * 2**20
MAX_FIELD_LINE = 8192
MAX_FIELDS = 100
# The fields that frame a body: each may come once.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})


class Refusal(Exception):
    """The request cannot be served as framed: answered with ``status`` and the message, and
    the connection is closed after."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RequestHead:
    method: str
    path: str  # without the query
    version: str
    fields: dict[str, str]  # by lower-case name

    @property
    def keep_alive(self) -> bool:
        connection = self.fields.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return connection != "close"
        return connection == "keep-alive"

    @property
    def expects_continue(self) -> bool:
        return self.fields.get("expect", "").lower() == "100-continue"

    @property
    def sends_body(self) -> bool:
        return "transfer-encoding" in self.fields or self.fields.get("content-length", "0") != "0"


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    """Method, path (no query) and version of a request line."""
    if len(line) > MAX_FIELD_LINE:
        raise Refusal(414, f"request line too long (at most {MAX_FIELD_LINE} bytes)")
    text = line.decode("iso-8859-1").rstrip("\r\n")
    words = text.split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise Refusal(400, f"bad request line {text[:80]!r}")
    method, target, version = words
    if version not in _VERSIONS:
        raise Refusal(505, f"{version} is not served")
    return method, target.split("?", 1)[0], version


def add_field(fields: dict[str, str], line: bytes) -> None:
    """One header field line into ``fields``."""
    if len(line) > MAX_FIELD_LINE:
        raise Refusal(431, f"header line too long (at most {MAX_FIELD_LINE} bytes)")
    name, colon, value = line.decode("iso-8859-1").partition(":")
    if not colon or not name or name != name.strip():
        raise Refusal(400, f"bad header line {line[:80]!r}")
    key = name.lower()
    if key in _FRAMING and key in fields:
        # Two lengths leave the body's end to whoever reads them: a request smuggled past one
        # reader to the next (RFC 9112, section 6.3).
        raise Refusal(400, f"repeated {name} header")
    fields[key] = value.strip()


def body_length(head: RequestHead) -> int:
    """The body's length from Content-Length: RFC 9110's 1*DIGIT, up to MAX_BODY_BYTES.
    int() would also take "+38", "3_8" and non-ASCII digits, which another reader of the same
    bytes may frame differently."""
    if "transfer-encoding" in head.fields:
        raise Refusal(411, "send the body with a Content-Length")
    value = head.fields.get("content-length", "0")
    if not (value.isascii() and value.isdigit()):
        raise Refusal(
            400,
            f"bad request: Content-Length {value[:20]!r} is not a number of bytes (digits only)",
        )
    length = int(value)
    if length > MAX_BODY_BYTES:
        raise Refusal(400, f"bad request: body of {length} bytes; at most {MAX_BODY_BYTES}")
    return length


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def reply(status: int, content_type: str, payload: bytes, *, close: bool) -> bytes:
    """Status line, headers and body, to go out in one write: with Nagle's algorithm a second
    write waits for the ACK of the first, which the caller delays by up to 40 ms on a kept-alive
    connection (every call took 40+ ms when replies went out in two writes)."""
    lines = [
        f"HTTP/1.1 {status} {_reason(status)}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
    ]
    if close:
        lines.append("Connection: close")
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + payload


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
