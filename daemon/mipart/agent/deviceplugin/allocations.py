"""A pod's ``mipart.io/allocation``, read from the API server (through the node's pod cache
when the daemon has one)."""

from __future__ import annotations

from typing import Any

from mipart.contract.allocation import decode
from mipart.contract.annotations import ALLOCATION
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.informer import Informer
from mipart.placement import Allocation


class AllocationMissing(LookupError):
    pass


class Allocations:
    def __init__(self, api: KubeApi, pods: Informer | None = None) -> None:
        self._api = api
        self._pods = pods

    def of(self, namespace: str, name: str) -> Allocation:
        """The allocation of pod ``namespace/name``; AllocationMissing saying why if none."""
        pod = self._cached(f"{namespace}/{name}")
        if pod is None:
            try:
                pod = self._api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            except KubeError as err:
                raise AllocationMissing(f"pod {namespace}/{name}: {err}") from None
        meta = pod["metadata"]
        text = (meta.get("annotations") or {}).get(ALLOCATION)
        if not text:
            raise AllocationMissing(f"pod {namespace}/{name} has no {ALLOCATION} annotation")
        try:
            return decode(text, pod=f"{namespace}/{name}", pod_uid=meta["uid"])
        except ValueError as err:
            raise AllocationMissing(str(err)) from None

    def _cached(self, key: str) -> dict[str, Any] | None:
        """The cached pod if it can be trusted; None sends the caller to the API server.

        The cache may lag the kubelet: a pod it does not hold yet, or an older pod of the same
        name on its way out (pod-resources names pods without their UID), is read afresh.
        """
        if self._pods is None:
            return None
        pod = self._pods.get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        if ALLOCATION not in (pod["metadata"].get("annotations") or {}):
            return None
        return pod
