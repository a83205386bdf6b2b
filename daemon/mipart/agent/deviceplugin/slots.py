"""The devices the kubelet sees: anonymous slots (``slot-<n>``), not partitions.

A slot means nothing until PreStartContainer resolves it to the pod that holds it, so the
kubelet may pick any of them; their number only bounds how many containers of this node can
hold a partition at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mipart.agent.partitions.manager import NodeStatus

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
SLOT_PREFIX = "slot-"
MIN_SLOTS = 64
# Pods one partition can hold at once, at most: more than a CPX partition's 24 GiB can serve
# (the kubelet's 110 pods per node bound the total anyway). The list grows with the
# partitions, so a re-partitioned GPU brings its slots without a restart.
SLOTS_PER_PARTITION = 8


def slot_id(n: int) -> str:
    return f"{SLOT_PREFIX}{n}"


@dataclass(frozen=True, slots=True)
class SlotList:
    version: int
    count: int
    healthy: bool

    def ids(self) -> list[str]:
        return [slot_id(n) for n in range(self.count)]


class Slots:
    """The current slot list, and a way to wait for the next one (for ListAndWatch)."""

    def __init__(self, min_slots: int = MIN_SLOTS) -> None:
        self._min = min_slots
        self._changed = threading.Condition()
        self._current = SlotList(version=0, count=min_slots, healthy=False)
        self._closed = False

    def current(self) -> SlotList:
        with self._changed:
            return self._current

    def observe(self, status: NodeStatus) -> None:
        """Follow the node: healthy while the daemon reads its hardware, enough slots for it."""
        inventory = status.inventory
        healthy = inventory is not None and status.hardware_error is None
        partitions = 0 if inventory is None else sum(len(g.partitions) for g in inventory.gpus)
        with self._changed:
            # Never shrink: a slot the kubelet has handed to a running container must stay
            # advertised, or the kubelet would count it against a device that is gone.
            count = max(self._current.count, self._min, partitions * SLOTS_PER_PARTITION)
            if (count, healthy) == (self._current.count, self._current.healthy):
                return
            self._current = SlotList(self._current.version + 1, count, healthy)
            self._changed.notify_all()

    def wait_newer(self, version: int, timeout: float) -> SlotList | None:
        """The list once it is newer than ``version``; None on timeout or once closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._current.version > version, timeout)
            if self._closed or self._current.version <= version:
                return None
            return self._current

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._closed

    def close(self) -> None:
        """End every ListAndWatch stream (the plugin is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
