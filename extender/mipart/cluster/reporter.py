"""Events on the objects users look at (their pods, a KServe pod's InferenceService), sent off
the hot path.

Filter runs inside kube-scheduler's scheduling loop; it only queues the Event. A pod that
stays unschedulable is retried often, so one Event per pod per interval is enough.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import structlog

from mipart.kube.api import KubeApi, KubeError
from mipart.kube.events import event_body, events_path

log = structlog.get_logger(__name__)


class EventReporter:
    def __init__(
        self, api: KubeApi, *, component: str, instance: str, interval_s: float = 30.0
    ) -> None:
        self._api = api
        self._component = component
        self._instance = instance
        self._interval_s = interval_s
        self._last: dict[tuple[str, str, str], float] = {}
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        threading.Thread(target=self._send_loop, name="events", daemon=True).start()

    def warn(self, pod: dict[str, Any], reason: str, message: str) -> None:
        self._emit(_reference(pod), "Warning", reason, message)

    def normal(self, pod: dict[str, Any], reason: str, message: str) -> None:
        self._emit(_reference(pod), "Normal", reason, message)

    def normal_about(
        self, regarding: dict[str, Any], reason: str, message: str, *, for_pod: str
    ) -> None:
        """An Event on another object than the pod (its KServe InferenceService), limited per
        pod (``for_pod``, its UID) like the pod's own, so that each pod's is posted."""
        self._emit(regarding, "Normal", reason, message, key=for_pod)

    def _emit(
        self,
        regarding: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
        *,
        key: str | None = None,
    ) -> None:
        limit = (str(regarding.get("uid")), reason, key or "")
        now = time.monotonic()
        if now - self._last.get(limit, -self._interval_s) < self._interval_s:
            return
        self._last[limit] = now
        if len(self._last) > 10_000:  # forget objects long gone
            self._last = {k: v for k, v in self._last.items() if now - v < self._interval_s}
        namespace = regarding.get("namespace") or "default"
        event = event_body(
            regarding,
            namespace=namespace,
            reason=reason,
            note=message,
            warning=kind == "Warning",
            controller=self._component,
            instance=self._instance,
            action="Scheduling",
        )
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("events.dropped", reason=reason)

    def _send_loop(self) -> None:
        while True:
            event = self._queue.get()
            namespace = event["metadata"]["namespace"]
            try:
                self._api.post(events_path(namespace), event)
            except (KubeError, OSError) as err:
                log.warning("events.failed", error=str(err))


def _reference(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": meta.get("name"),
        "namespace": meta.get("namespace", "default"),
        "uid": str(meta.get("uid")),
    }
