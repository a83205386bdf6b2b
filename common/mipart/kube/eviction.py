"""Evicting a pod through the Eviction API, so that PodDisruptionBudgets are honoured."""

from __future__ import annotations

from mipart.kube.api import KubeApi


def evict(api: KubeApi, pod: str, uid: str, *, dry_run: bool = False) -> None:
    """Ask the API server to evict ``pod`` (namespace/name). Raises KubeError: 429 while a
    PodDisruptionBudget forbids it, 404 (or 409, another UID) once the pod is gone.

    The UID precondition keeps a pod re-created under the same name (a StatefulSet's) from
    being evicted for what its predecessor did. ``dry_run`` asks the same question, PDBs
    included, and changes nothing.
    """
    namespace, _, name = pod.partition("/")
    api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
        query={"dryRun": "All"} if dry_run else None,
        body={
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}},
        },
    )
