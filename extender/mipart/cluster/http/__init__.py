"""The HTTP server the extender and the webhook share: JSON routes, bounded in every way a
caller could hold it (connections, time, body bytes, threads)."""

from mipart.cluster.http._framing import MAX_BODY_BYTES, MAX_FIELD_LINE, MAX_FIELDS
from mipart.cluster.http._limits import Limits
from mipart.cluster.http._server import BadRequest, DropHook, JsonServer

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_FIELDS",
    "MAX_FIELD_LINE",
    "BadRequest",
    "DropHook",
    "JsonServer",
    "Limits",
]
