"""The extender's picture of the cluster: GPUNodes and mipart pods, watched, turned into a
ClusterView under one lock.

Nothing here is a ledger of its own. Allocations are the pods' ``mipart.io/allocation``
annotations; the only thing held in memory alone is a reservation between a bind's decision
and the moment the API server has the Binding, and it is dropped if the Binding fails. A
restarted extender therefore rebuilds exactly what the API server holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from mipart.cluster.capacity import capacity_of, ready_of, same_inventory
from mipart.contract.annotations import ALLOCATION
from mipart.contract.resources import GPUNODES
from mipart.kube.api import KubeApi
from mipart.kube.informer import Informer, wait_all_synced
from mipart.kube.objects import FINISHED, allocation_of
from mipart.placement import ClusterView, NodeCapacity

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ClusterState:
    def __init__(
        self,
        api: KubeApi,
        *,
        scheduler_name: str,
        stale_after_s: float = 60.0,
        sweep_interval_s: float = 5.0,
    ) -> None:
        self._lock = threading.Lock()
        self.view = ClusterView()
        self._stale_after_s = stale_after_s
        self._sweep_interval_s = sweep_interval_s
        self._ready: dict[str, bool] = {}
        self._stop = threading.Event()
        self.gpunodes = Informer(api, GPUNODES, name="gpunodes", handler=self._on_gpunode)
        # Only pods of our scheduler can hold an allocation; the API filters the rest out.
        self.pods = Informer(
            api,
            "/api/v1/pods",
            name="pods",
            field_selector=f"spec.schedulerName={scheduler_name}",
            handler=self._on_pod,
        )

    def start(self) -> None:
        self.pods.start()
        self.gpunodes.start()
        threading.Thread(target=self._sweep, name="heartbeat-sweep", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.pods.stop()
        self.gpunodes.stop()

    def wait_synced(self, timeout: float) -> bool:
        return wait_all_synced([self.pods, self.gpunodes], timeout)

    @property
    def synced(self) -> bool:
        return self.pods.synced.is_set() and self.gpunodes.synced.is_set()

    def locked(self, action: Callable[[ClusterView], T]) -> T:
        """Run ``action`` on the view under the lock; filter, prioritize and bind all do."""
        with self._lock:
            return action(self.view)

    # -- informer handlers -----------------------------------------------------------------

    def _on_gpunode(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self._lock:
            if new is None:
                self.view.remove_node(key)
                self._ready.pop(key, None)
                return
            now, stale_after_s = datetime.now(UTC), self._stale_after_s
            ready = ready_of(new, now=now, stale_after_s=stale_after_s)
            if old is not None and same_inventory(old, new) and self._ready.get(key) == ready:
                return  # a heartbeat, and the node's readiness stands
            self._set(capacity_of(new, now=now, stale_after_s=stale_after_s))

    def _on_pod(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None and new is not None and _holding(old) == _holding(new):
            return  # a status update (most pod events after a bind): it holds what it held
        uid = str(((new or old) or {}).get("metadata", {}).get("uid"))
        with self._lock:
            if new is None:
                self.view.remove_allocation(uid)
                return
            allocation = allocation_of(new)
            if allocation is not None:
                self.view.add_allocation(allocation)
            elif (new.get("status") or {}).get("phase") in FINISHED or new["spec"].get("nodeName"):
                # Finished, or bound without our annotation: it holds nothing.
                self.view.remove_allocation(uid)
            # A pending pod without the annotation keeps a reservation a bind in flight made.

    def _sweep(self) -> None:
        """Heartbeats go stale without any event: re-check readiness now and then."""
        while not self._stop.wait(self._sweep_interval_s):
            now = datetime.now(UTC)
            for gpunode in self.gpunodes.items():
                name = gpunode["metadata"]["name"]
                ready = ready_of(gpunode, now=now, stale_after_s=self._stale_after_s)
                if self._ready.get(name) == ready:
                    continue
                capacity = capacity_of(gpunode, now=now, stale_after_s=self._stale_after_s)
                with self._lock:
                    if self._ready.get(name) != capacity.ready:
                        log.info("node.readiness", node=name, ready=capacity.ready)
                        self._set(capacity)

    def _set(self, capacity: NodeCapacity) -> None:
        self._ready[capacity.name] = capacity.ready
        self.view.set_node(capacity)


def _holding(pod: dict[str, Any]) -> tuple[object, ...]:
    """What decides the allocation a pod holds (see _on_pod and allocation_of)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return (
        meta.get("uid"),
        (meta.get("annotations") or {}).get(ALLOCATION),
        spec.get("nodeName"),
        (pod.get("status") or {}).get("phase") in FINISHED,
    )
