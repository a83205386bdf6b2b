"""events.k8s.io/v1 Events, as every mipart component writes them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import structlog

from mipart.kube.api import KubeApi, KubeError

log = structlog.get_logger(__name__)

# A cluster-scoped object's (a GPUNode's) Events live in "default", where kubectl describe
# looks them up.
CLUSTER_EVENTS_NAMESPACE = "default"


def event_body(
    regarding: dict[str, Any],
    *,
    namespace: str,
    reason: str,
    note: str,
    warning: bool,
    controller: str,
    instance: str,
    action: str,
) -> dict[str, Any]:
    """An Event about ``regarding`` (an object reference). Named as client-go names them, the
    object's name and a hex timestamp: generateName may not end in the "." kubectl expects."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"{regarding.get('name', 'object')}.{time.time_ns():x}",
            "namespace": namespace,
        },
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "note": note[:1024],
        "action": action,
        "reportingController": controller,
        "reportingInstance": instance,
        "regarding": regarding,
    }


def events_path(namespace: str) -> str:
    return f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"


def gpunode_reference(name: str, uid: str | None = None) -> dict[str, Any]:
    """What an Event about the GPUNode ``name`` says it is about."""
    regarding: dict[str, Any] = {
        "apiVersion": "mipart.io/v1alpha1",
        "kind": "GPUNode",
        "name": name,
    }
    if uid:
        regarding["uid"] = uid
    return regarding


def post_event(
    api: KubeApi,
    regarding: dict[str, Any],
    *,
    namespace: str,
    reason: str,
    note: str,
    warning: bool,
    controller: str,
    instance: str,
    action: str,
) -> None:
    """Write an Event now, best effort: a lost Event must not stop the work it reports (the
    log, a condition or a metric says it too)."""
    body = event_body(
        regarding,
        namespace=namespace,
        reason=reason,
        note=note,
        warning=warning,
        controller=controller,
        instance=instance,
        action=action,
    )
    try:
        api.post(events_path(namespace), body)
    except (KubeError, OSError) as err:
        log.warning("event.failed", reason=reason, error=str(err))
