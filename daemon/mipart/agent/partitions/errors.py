"""Why the manager refuses a request; the gRPC edge maps each to a status code."""

from __future__ import annotations


class RequestError(Exception):
    """Base of every refusal; the message names the field or the state that is wrong."""


class InvalidRequest(RequestError):
    """The request itself is malformed (unknown GPU, unknown mode)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Conflict(RequestError):
    """Well-formed, but the node's state forbids it now (busy GPU, invalid combination)."""


class Unavailable(RequestError):
    """The hardware cannot be read or driven right now."""
