"""The QoS queue: which gated pods to release to the scheduler now and in which order, and
which lower-class pods a latency pod that fits nowhere may preempt (docs/queue.md).
"""

from __future__ import annotations

from mipart.queue._order import (
    CLASS_ORDER,
    DEFAULT_POLICY,
    Counted,
    HeldPartitions,
    QueuedPod,
    QueuePolicy,
    Round,
    hold_to_plan,
    order,
    plan_round,
)
from mipart.queue._preemption import (
    Awaiting,
    Preemption,
    plan_preemption,
)

__all__ = [
    "CLASS_ORDER",
    "DEFAULT_POLICY",
    "Awaiting",
    "Counted",
    "HeldPartitions",
    "Preemption",
    "QueuePolicy",
    "QueuedPod",
    "Round",
    "hold_to_plan",
    "order",
    "plan_preemption",
    "plan_round",
]
