"""The text form of an Allocation, as the extender writes it on the pod at bind time
(``mipart.io/allocation``) and the daemon, the controller and the CLI read it back.

The pod carries its own name, UID and node; the text holds only the decision, versioned so
that a later format can be read beside this one.
"""

from __future__ import annotations

import json
from typing import Any

from mipart.placement import Allocation, InvalidRequest, Sharing

VERSION = 1


def encode(allocation: Allocation) -> str:
    return json.dumps(
        {
            "v": VERSION,
            "node": allocation.node,
            "partitions": list(allocation.partition_ids),
            "memoryBytes": allocation.memory_bytes,
            "sharing": allocation.sharing.value,
        },
        separators=(",", ":"),
    )


def decode(text: str, *, pod: str, pod_uid: str) -> Allocation:
    """The Allocation in ``text``; ValueError naming what is wrong if it is not one."""
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"allocation of {pod} is not JSON: {err}") from None
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        raise ValueError(f"allocation of {pod}: expected a version {VERSION} object")
    try:
        partitions = raw["partitions"]
        if not isinstance(partitions, list) or not all(isinstance(p, str) for p in partitions):
            raise ValueError("partitions must be a list of partition ids")
        memory = raw["memoryBytes"]
        if not isinstance(memory, int) or isinstance(memory, bool):
            raise ValueError("memoryBytes must be an integer")
        return Allocation(
            pod=pod,
            pod_uid=pod_uid,
            node=str(raw["node"]),
            partition_ids=tuple(partitions),
            memory_bytes=memory,
            sharing=Sharing(raw.get("sharing", Sharing.SHARED.value)),
        )
    except (KeyError, ValueError, InvalidRequest) as err:
        raise ValueError(f"allocation of {pod}: {err}") from None
