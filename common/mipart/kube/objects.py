"""mipart's vocabulary on the API server, shared by the daemon and the cluster side: where
GPUNodes live, and how a pod's allocation is read back from it."""

from __future__ import annotations

from typing import Any

import structlog

from mipart.contract.allocation import decode
from mipart.contract.annotations import ALLOCATION
from mipart.kube.informer import object_key
from mipart.placement import Allocation

log = structlog.get_logger(__name__)

# A pod in one of these phases holds nothing any more.
FINISHED = ("Succeeded", "Failed")


def allocation_of(pod: dict[str, Any]) -> Allocation | None:
    """The allocation a pod holds, or None (not bound by mipart, finished, or unreadable)."""
    meta = pod.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(ALLOCATION)
    if not text or (pod.get("status") or {}).get("phase") in FINISHED:
        return None
    try:
        return decode(text, pod=object_key(pod), pod_uid=str(meta.get("uid")))
    except ValueError as err:
        log.warning("allocation.unreadable", pod=object_key(pod), error=str(err))
        return None
