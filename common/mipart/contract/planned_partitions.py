"""The text form of a hold, as mipart-controller writes it on a pod it releases
(``mipart.io/planned-partitions``) and the extender and the controller read it back.

A hold says where the re-partition planner counted the pod: these partitions of this node,
until a time (UTC). While it lasts the extender binds the pod to exactly those partitions and
nowhere else; after it the pod is placed like any other (still held to its planned mode).

    {"v":1,"node":"mi300x-03","partitions":["gpu2-dpx-0"],"expires":"2025-06-01T12:00:00Z"}

The expiry is written to the second, rounded down: a hold never lasts longer than asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mipart.contract.annotations import PLANNED_PARTITIONS
from mipart.geometry import gpu_of_partition_id

VERSION = 1
ALLOWED = (
    '{"v":1,"node":"<node>","partitions":["<partition id, e.g. gpu2-dpx-0>",...],'
    '"expires":"<UTC time, e.g. 2025-06-01T12:00:00Z>"}, written only by mipart-controller'
)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class InvalidHold(ValueError):
    """The annotation's text is not a hold; ``str()`` names the annotation and what is
    allowed."""


@dataclass(frozen=True, slots=True)
class PlannedPartitions:
    """A pod held, until ``expires``, to exactly ``partition_ids`` of ``node``."""

    node: str
    partition_ids: tuple[str, ...]
    expires: datetime  # timezone-aware

    def __post_init__(self) -> None:
        if self.expires.tzinfo is None:
            raise ValueError("a hold's expiry must carry its time zone (UTC)")

    def holds_at(self, now: datetime) -> bool:
        """Whether the hold still stands at ``now`` (timezone-aware)."""
        return now < self.expires

    @property
    def expires_text(self) -> str:
        """The expiry as written: RFC 3339 in UTC, to the second (``2025-06-01T12:00:00Z``)."""
        return self.expires.astimezone(UTC).strftime(_TIME_FORMAT)

    def describe(self) -> str:
        """For reasons and logs: ``mi300x-03 gpu2-dpx-0 until 2025-06-01T12:00:00Z``."""
        return f"{self.node} {', '.join(self.partition_ids)} until {self.expires_text}"


def encode(hold: PlannedPartitions) -> str:
    return json.dumps(
        {
            "v": VERSION,
            "node": hold.node,
            "partitions": list(hold.partition_ids),
            "expires": hold.expires_text,
        },
        separators=(",", ":"),
    )


def decode(text: str) -> PlannedPartitions:
    """The hold in ``text``; InvalidHold naming the annotation and what is allowed if it is
    not one."""
    try:
        return _decode(text)
    except (ValueError, KeyError, TypeError) as err:
        shown = text if len(text) <= 200 else text[:200] + "..."
        problem = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise InvalidHold(
            f"{PLANNED_PARTITIONS}: {shown!r} is not valid ({problem}); allowed: {ALLOWED}"
        ) from None


def _decode(text: str) -> PlannedPartitions:
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        raise ValueError(f"expected a version {VERSION} object")
    node = raw["node"]
    if not isinstance(node, str) or not node:
        raise ValueError("node must be a node name")
    partitions = raw["partitions"]
    if (
        not isinstance(partitions, list)
        or not partitions
        or not all(isinstance(p, str) and gpu_of_partition_id(p) is not None for p in partitions)
    ):
        raise ValueError("partitions must be a non-empty list of partition ids")
    if len(set(partitions)) != len(partitions):
        raise ValueError("a partition is listed twice")
    expires = raw["expires"]
    if not isinstance(expires, str):
        raise ValueError("expires must be a UTC time such as 2025-06-01T12:00:00Z")
    try:
        when = datetime.strptime(expires, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(
            f"expires: {expires!r} is not a UTC time such as 2025-06-01T12:00:00Z"
        ) from None
    return PlannedPartitions(node, tuple(partitions), when)
