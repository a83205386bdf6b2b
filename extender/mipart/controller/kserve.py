"""The KServe InferenceService a pod belongs to, as an object reference for Events: users of
KServe watch the InferenceService they applied, not its pods.

A pod names its InferenceService by label; the reference needs the object's UID too, or
``kubectl describe inferenceservice`` does not show the Event. One GET per InferenceService,
kept for a minute (a re-created one gets a new UID).
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from mipart.contract.kserve import (
    INFERENCESERVICE_API_VERSION,
    INFERENCESERVICE_KIND,
    INFERENCESERVICE_LABEL,
    INFERENCESERVICE_PLURAL,
)
from mipart.kube.api import KubeApi, KubeError

log = structlog.get_logger(__name__)

KEEP_S = 60.0


class InferenceServices:
    def __init__(self, api: KubeApi, *, keep_s: float = KEEP_S) -> None:
        self._api = api
        self._keep_s = keep_s
        # (namespace, name) -> (when read, its reference; None: unreadable or gone)
        self._known: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
        self._refused: set[int] = set()  # statuses already logged

    def of(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The reference of ``pod``'s InferenceService; None for a pod of none, or when it
        cannot be read (gone, or the controller may not: logged once per status)."""
        meta = pod.get("metadata") or {}
        name = (meta.get("labels") or {}).get(INFERENCESERVICE_LABEL)
        namespace = meta.get("namespace")
        if not name or not namespace:
            return None
        now = time.monotonic()
        known = self._known.get((namespace, name))
        if known is not None and now - known[0] < self._keep_s:
            return known[1]
        reference = self._read(namespace, name)
        if len(self._known) > 1000:
            self._known = {k: v for k, v in self._known.items() if now - v[0] < self._keep_s}
        self._known[(namespace, name)] = (now, reference)
        return reference

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = (
            f"/apis/{INFERENCESERVICE_API_VERSION}/namespaces/{namespace}/"
            f"{INFERENCESERVICE_PLURAL}/{name}"
        )
        try:
            service = self._api.get(path)
        except (KubeError, OSError) as err:
            status = err.status if isinstance(err, KubeError) else 0
            if status not in self._refused:
                self._refused.add(status)
                log.warning("kserve.unreadable", service=f"{namespace}/{name}", error=str(err))
            return None
        return {
            "apiVersion": INFERENCESERVICE_API_VERSION,
            "kind": INFERENCESERVICE_KIND,
            "name": name,
            "namespace": namespace,
            "uid": service["metadata"]["uid"],
        }
