"""Events (events.k8s.io/v1) from the daemon: about this node's GPUNode, for `kubectl describe
gpunode`, and about the pods on this node, for `kubectl describe pod`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from mipart.kube.api import KubeApi, KubeError
from mipart.kube.events import event_body, events_path

log = structlog.get_logger(__name__)

# A cluster-scoped object's Events live in "default", as kubectl describe looks them up there.
NAMESPACE = "default"
CONTROLLER = "mipart.io/daemon"


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
            controller=CONTROLLER,
            instance=self._node,
            action="ReconcileLayout",
        )
        _post(self._api, NAMESPACE, body)


class PodEvents:
    def __init__(self, api: KubeApi, node_name: str) -> None:
        self._api = api
        self._node = node_name

    def warn(self, pod: str, uid: str, *, reason: str, note: str, action: str) -> None:
        """A Warning on ``pod`` (namespace/name); best effort, as the log says it too."""
        namespace, _, name = pod.partition("/")
        regarding = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": namespace,
            "name": name,
            "uid": uid,
        }
        body = event_body(
            regarding,
            namespace=namespace,
            reason=reason,
            note=note,
            warning=True,
            controller=CONTROLLER,
            instance=self._node,
            action=action,
        )
        _post(self._api, namespace, body)


def _post(api: KubeApi, namespace: str, body: dict[str, Any]) -> None:
    try:
        api.post(events_path(namespace), body)
    except (KubeError, OSError) as err:
        log.warning("event.failed", reason=body["reason"], error=str(err))
