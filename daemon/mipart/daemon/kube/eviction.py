"""Evicting a pod through the Eviction API, so that PodDisruptionBudgets are honoured."""

from __future__ import annotations

from mipart.kube.api import KubeApi


def evict(api: KubeApi, pod: str, uid: str) -> None:
    """Ask the API server to evict ``pod`` (namespace/name). Raises KubeError: 429 while a
    PodDisruptionBudget forbids it, 404 (or 409, another UID) once the pod is gone.

    The UID precondition keeps a pod re-created under the same name (a StatefulSet's) from
    being evicted for what its predecessor did.
    """
    namespace, _, name = pod.partition("/")
    api.post(
        f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}},
        },
    )
