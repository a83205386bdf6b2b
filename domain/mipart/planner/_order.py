"""The order in which a plan places waiting pods (internal).

Queue order (QoS class, then age) is what the queue releases by, but placing pods in it packs
badly: small early pods spread over GPUs that larger later pods of their class needed, and
when demand exceeds supply the memory served depends on which pods go first. Within a class
the plan therefore places the largest first — first-fit decreasing, and, because each pod
takes whole partitions, also the best-filling pod of each partition size first — except that
a pod which has waited ``aging_s`` goes before every younger pod of its class, oldest first:
packing never starves a pod for longer than that.
"""

from __future__ import annotations

from collections.abc import Sequence

from mipart.placement import QOS_RANK
from mipart.planner._types import Waiting


def packing_order(demand: Sequence[Waiting], now: float, aging_s: float) -> list[int]:
    """Positions in ``demand`` in the order the plan places them."""

    def key(position: int) -> tuple[int, bool, float, int, int, float, int]:
        waiting = demand[position]
        request = waiting.request
        aged = now - waiting.since >= aging_s
        return (
            QOS_RANK[request.qos],
            not aged,
            waiting.since if aged else 0.0,
            # Per partition: pods of one natural mode take partitions of one size, so the
            # largest limit fills its partitions best; then the most partitions.
            -request.memory_bytes,
            -request.partitions,
            waiting.since,
            position,
        )

    return sorted(range(len(demand)), key=key)
