"""The memory-limit monitor: pods whose processes use more VRAM than their allocation gives.

It reads the partition manager's latest snapshot (amdsmi's per-process VRAM, refreshed every
``--poll-interval``) rather than the hardware, so the GPUs are read by one thread only. Each
process is mapped to its pod through its cgroup, each pod to its allocation through the
publisher's cache of this node's pods. An excursion gets one Warning Event on the pod, a log
line and the metrics; with ``evict`` the pod is also deleted, as the kubelet ends a pod over a
limit: a PodDisruptionBudget does not hold it back (docs/daemon.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import groupby

import structlog

from mipart.agent.gpunode.events import PodEvents
from mipart.agent.gpunode.publisher import GpuNodePublisher
from mipart.agent.limits.cgroups import ProcPods
from mipart.agent.partitions.manager import PartitionManager
from mipart.geometry import GpuProcess
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.eviction import delete
from mipart.sizing import LimitAction, LimitWatch, MemoryReading, PodMemory, read_pod_memory

log = structlog.get_logger(__name__)

REASON = "MemoryLimitExceeded"
# A reading, and the pods' partitions that went over their limit with it.
Listener = Callable[[MemoryReading, tuple[PodMemory, ...]], None]


class MemoryMonitor:
    def __init__(
        self,
        api: KubeApi,
        node_name: str,
        manager: PartitionManager,
        publisher: GpuNodePublisher,
        proc: ProcPods,
        *,
        action: LimitAction = LimitAction.REPORT,
        interval_s: float = 2.0,
    ) -> None:
        self._api = api
        self._events = PodEvents(api, node_name)
        self._manager = manager
        self._publisher = publisher
        self._proc = proc
        self._action = action
        self._interval_s = interval_s
        self._watch = LimitWatch()
        self._listeners: list[Listener] = []
        # pid -> why it counts for no pod, so that each is logged once, not every check.
        self._unattributed: dict[int, str] = {}
        self._evicted: set[str] = set()  # pod UIDs
        self._eviction_errors: dict[str, str] = {}  # pod UID -> last refusal, logged once
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-monitor", daemon=True)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._manager.add_listener(lambda _status: self._wake.set())  # a fresh amdsmi reading
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._check()
            except Exception:
                log.exception("memory.check_failed")
            # Also on a timer: pods and cgroups change without a new hardware reading.
            self._wake.wait(self._interval_s)
            self._wake.clear()

    def _check(self) -> None:
        inventory = self._manager.status().inventory
        if inventory is None or not self._publisher.pods.synced.is_set():
            return  # no usage or no allocations known yet: nothing to compare
        processes = inventory.processes
        pods, why = self._proc.pods_of(p.pid for p in processes)
        reading = read_pod_memory(processes, pods, self._publisher.allocations())
        self._log_unattributed(reading.unattributed, pods, why)
        exceeded = self._watch.update(reading)
        for _, group in groupby(exceeded, key=lambda m: m.pod_uid):
            self._report(list(group))
        if self._action is LimitAction.EVICT:
            self._evict_over(reading)
        for listener in self._listeners:
            listener(reading, exceeded)

    def _log_unattributed(
        self, processes: tuple[GpuProcess, ...], pods: dict[int, str], why: dict[int, str]
    ) -> None:
        now = {
            p.pid: why.get(p.pid) or f"its pod (uid {pods[p.pid]}) has no allocation here"
            for p in processes
        }
        for p in processes:
            if self._unattributed.get(p.pid) != now[p.pid]:
                log.warning(
                    "memory.unattributed_process",
                    pid=p.pid,
                    name=p.name,
                    partition=p.partition_id,
                    vram_bytes=p.vram_bytes,
                    reason=now[p.pid],
                )
        self._unattributed = now

    def _report(self, over: list[PodMemory]) -> None:
        pod = over[0]
        note = "over its memory limit: " + "; ".join(m.describe() for m in over)
        if self._action is LimitAction.EVICT:
            note += "; evicting the pod (--memory-limit-action=evict)"
        log.warning("memory.limit_exceeded", pod=pod.pod, uid=pod.pod_uid, note=note)
        self._events.warn(
            pod.pod, pod.pod_uid, reason=REASON, note=note, action=self._action.value.title()
        )

    def _evict_over(self, reading: MemoryReading) -> None:
        """Delete every pod over a limit, retrying while the API server refuses."""
        live = {m.pod_uid for m in reading.pods}
        self._evicted &= live
        self._eviction_errors = {u: e for u, e in self._eviction_errors.items() if u in live}
        over = {m.pod_uid: m.pod for m in reading.pods if m.over_limit}
        for uid, pod in over.items():
            if uid in self._evicted:
                continue  # terminating: its processes may hold memory until they exit
            try:
                delete(self._api, pod, uid)
            except KubeError as err:
                if err.status in (404, 409):  # gone, or replaced by a pod of that name
                    self._evicted.add(uid)
                elif self._eviction_errors.get(uid) != err.message:
                    self._eviction_errors[uid] = err.message
                    log.warning("memory.eviction_refused", pod=pod, error=str(err))
                continue
            except OSError as err:
                log.warning("memory.eviction_failed", pod=pod, error=str(err))
                continue
            self._evicted.add(uid)
            log.warning("memory.pod_evicted", pod=pod, uid=uid)
