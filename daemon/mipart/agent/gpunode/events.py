"""Events (events.k8s.io/v1) from the daemon: about this node's GPUNode, for `kubectl describe
gpunode`, and about the pods on this node, for `kubectl describe pod`."""

from __future__ import annotations

from collections.abc import Callable

from mipart.contract.resources import DAEMON_COMPONENT
from mipart.kube.api import KubeApi
from mipart.kube.events import CLUSTER_EVENTS_NAMESPACE, gpunode_reference, post_event

CONTROLLER = DAEMON_COMPONENT


class GpuNodeEvents:
    def __init__(self, api: KubeApi, node_name: str, uid: Callable[[], str | None]) -> None:
        self._api = api
        self._node = node_name
        self._uid = uid

    def record(self, reason: str, note: str, warning: bool) -> None:
        """Best effort: a lost Event must not stop a reconcile (the condition says it too)."""
        post_event(
            self._api,
            gpunode_reference(self._node, self._uid()),
            namespace=CLUSTER_EVENTS_NAMESPACE,
            reason=reason,
            note=note,
            warning=warning,
            controller=CONTROLLER,
            instance=self._node,
            action="ReconcileLayout",
        )


class PodEvents:
    def __init__(self, api: KubeApi, node_name: str) -> None:
        self._api = api
        self._node = node_name

    def warn(self, pod: str, uid: str, *, reason: str, note: str, action: str) -> None:
        """A Warning on ``pod`` (namespace/name); best effort, as the log says it too."""
        namespace, _, name = pod.partition("/")
        post_event(
            self._api,
            {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name, "uid": uid},
            namespace=namespace,
            reason=reason,
            note=note,
            warning=True,
            controller=CONTROLLER,
            instance=self._node,
            action=action,
        )
