"""Events (events.k8s.io/v1) about this node's GPUNode, for `kubectl describe gpunode`."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from mipart.kube.api import KubeApi, KubeError
from mipart.kube.events import event_body, events_path

log = structlog.get_logger(__name__)

# A cluster-scoped object's Events live in "default", as kubectl describe looks them up there.
NAMESPACE = "default"


class GpuNodeEvents:
    def __init__(self, api: KubeApi, node_name: str, uid: Callable[[], str | None]) -> None:
        self._api = api
        self._node = node_name
        self._uid = uid

    def record(self, reason: str, note: str, warning: bool) -> None:
        """Best effort: a lost Event must not stop a reconcile (the condition says it too)."""
        regarding = {"apiVersion": "mipart.io/v1alpha1", "kind": "GPUNode", "name": self._node}
        uid = self._uid()
        if uid:
            regarding["uid"] = uid
        body = event_body(
            regarding,
            namespace=NAMESPACE,
            reason=reason,
            note=note,
            warning=warning,
            controller="mipart.io/daemon",
            instance=self._node,
            action="ReconcileLayout",
        )
        try:
            self._api.post(events_path(NAMESPACE), body)
        except (KubeError, OSError) as err:
            log.warning("event.failed", reason=reason, error=str(err))
