"""The two ways mipart makes a pod go: evicted through the Eviction API, so that
PodDisruptionBudgets are honoured (a voluntary disruption: preemption, defragmentation), or
deleted outright (a limit enforced, which no budget holds back)."""

from __future__ import annotations

from mipart.kube.api import KubeApi


def evict(api: KubeApi, pod: str, uid: str, *, dry_run: bool = False) -> None:
    """Ask the API server to evict ``pod`` (namespace/name). Raises KubeError: 429 while a
    PodDisruptionBudget forbids it, 404 (or 409, another UID) once the pod is gone.

    The UID precondition keeps a pod re-created under the same name (a StatefulSet's) from
    being evicted for what its predecessor did. ``dry_run`` asks the same question, PDBs
    included, and changes nothing.
    """
    namespace, name = _split(pod)
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


def delete(api: KubeApi, pod: str, uid: str) -> None:
    """Delete ``pod`` (namespace/name) with its own grace period, as the kubelet ends a pod
    that goes over a limit: no PodDisruptionBudget is consulted. Raises KubeError: 404 (or
    409, another UID) once the pod is gone; the same UID precondition as ``evict``.

    Unlike an Eviction, a DELETE shows the API server's admission the pod itself, so a policy
    can check which node it runs on (docs/security.md#least-privilege).
    """
    namespace, name = _split(pod)
    api.request(
        "DELETE",
        f"/api/v1/namespaces/{namespace}/pods/{name}",
        body={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}},
    )


def _split(pod: str) -> tuple[str, str]:
    namespace, _, name = pod.partition("/")
    return namespace, name
