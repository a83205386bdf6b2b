"""Which pods use more VRAM than their allocation gives them, and when to say so.

amdsmi reports VRAM per process and partition; the daemon maps each process to its pod. A
pod's usage on a partition is the sum over its processes there. Its limit there is the
``memory_bytes`` of its allocation if the partition is one of its own, and nothing if it is
not: the device plugin hands a container only its allocated partitions, so usage elsewhere
means the hand-off was bypassed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from mipart.geometry import GpuProcess, Rounding, format_bytes
from mipart.placement import Allocation


@dataclass(frozen=True, slots=True)
class PodMemory:
    """One pod's VRAM on one partition, against its limit there."""

    pod: str  # namespace/name, as in Allocation.pod
    pod_uid: str
    partition_id: str
    used_bytes: int
    limit_bytes: int
    pids: tuple[int, ...]

    @property
    def over_limit(self) -> bool:
        return self.used_bytes > self.limit_bytes

    @property
    def namespace(self) -> str:
        return self.pod.partition("/")[0]

    @property
    def name(self) -> str:
        return self.pod.partition("/")[2]

    def describe(self) -> str:
        """``gpu0-cpx-1: 12Gi used, limit 10Gi (pids 4242, 4243)``, in the units of the
        user's ``mipart.io/memory``; usage rounds up so that it never reads as the limit."""
        pids = ", ".join(map(str, self.pids)) or "none"
        return (
            f"{self.partition_id}: {format_bytes(self.used_bytes, Rounding.UP)} used, "
            f"limit {format_bytes(self.limit_bytes)} (pids {pids})"
        )


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """The pods' usage at one moment, and the processes that belong to no allocation."""

    # Every partition of every allocation (unused ones at 0), and every partition a pod's
    # processes use outside its allocation (limit 0); sorted by pod, then partition.
    pods: tuple[PodMemory, ...]
    # Processes whose pid maps to no pod, or to a pod that holds no allocation here.
    unattributed: tuple[GpuProcess, ...]


def read_pod_memory(
    processes: Iterable[GpuProcess],
    pod_of_pid: Mapping[int, str],
    allocations: Iterable[Allocation],
) -> MemoryReading:
    """Attribute ``processes`` to the pods of ``allocations`` through ``pod_of_pid`` (pid ->
    pod UID) and sum their VRAM per pod and partition."""
    by_uid = {a.pod_uid: a for a in allocations}
    used = {(a.pod_uid, p): 0 for a in by_uid.values() for p in a.partition_ids}
    pids: dict[tuple[str, str], list[int]] = defaultdict(list)
    unattributed = []
    for process in processes:
        uid = pod_of_pid.get(process.pid)
        if uid is None or uid not in by_uid:
            unattributed.append(process)
            continue
        key = (uid, process.partition_id)
        used[key] = used.get(key, 0) + process.vram_bytes
        pids[key].append(process.pid)
    pods = []
    for (uid, partition), amount in used.items():
        a = by_uid[uid]
        limit = a.memory_bytes if partition in a.partition_ids else 0
        pods.append(
            PodMemory(a.pod, uid, partition, amount, limit, tuple(sorted(pids[(uid, partition)])))
        )
    pods.sort(key=lambda m: (m.pod, m.partition_id))
    return MemoryReading(tuple(pods), tuple(unattributed))


class LimitWatch:
    """Reports each excursion over a limit once, not on every reading.

    A pod's partition is reported when it goes over its limit, and may be reported again only
    after a reading shows it back under (or gone): a pod that stays over for an hour gets one
    Event, not one per poll, and one that oscillates gets one per excursion.
    """

    def __init__(self) -> None:
        self._over: set[tuple[str, str]] = set()

    def update(self, reading: MemoryReading) -> tuple[PodMemory, ...]:
        """The pods' partitions that went over their limit since the previous reading."""
        over = [m for m in reading.pods if m.over_limit]
        new = tuple(m for m in over if (m.pod_uid, m.partition_id) not in self._over)
        self._over = {(m.pod_uid, m.partition_id) for m in over}
        return new


class LimitAction(StrEnum):
    """What the daemon does about a pod over its limit, beyond the Event and the metric."""

    REPORT = "report"
    EVICT = "evict"
