"""The body of an events.k8s.io/v1 Event, as every mipart component writes one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


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
