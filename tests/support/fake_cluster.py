"""An API server in memory for the controller and the extender together: pods and GPUNodes
live in one ClusterState's informers, and what the components write (the queue's JSON patches,
the extender's Bindings, the planner's GPUNode patches, Events) is applied there or recorded,
as the API server and the watches would. Unit tests drive the real loops and verbs with it.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any, cast

from mipart.cluster.view import ClusterState
from mipart.contract.allocation import decode
from mipart.contract.annotations import ALLOCATION, MEMORY, QUEUE
from mipart.contract.resources import QUEUE_GATE
from mipart.geometry import ComputeMode, MemoryMode, partitions_of
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.informer import Informer, object_key
from mipart.placement import Allocation

SCHEDULER = "mipart-scheduler"
NAMESPACE = "ns"
GIB = 2**30


def gpunode(name: str, modes: dict[int, str], *, beat: datetime | None = None) -> dict[str, Any]:
    """A GPUNode as a ready NPS1 daemon publishes it: GPU index -> compute mode."""
    when = (beat or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {},
        "status": {
            "heartbeatTime": when,
            "conditions": [{"type": "Ready", "status": "True"}],
            "memoryPartition": "NPS1",
            "memoryPartitionCaps": ["NPS1"],
            "gpus": [
                {
                    "index": index,
                    "computePartition": mode,
                    "health": "Healthy",
                    "phase": "Ready",
                    "partitions": [
                        {"id": p.id}
                        for p in partitions_of(index, ComputeMode(mode), MemoryMode.NPS1)
                    ],
                }
                for index, mode in sorted(modes.items())
            ],
        },
    }


def queued_pod(
    name: str, memory: str = "20Gi", *, created: str = "2020-01-01T00:00:00Z", **more: str
) -> dict[str, Any]:
    """A pod behind the queue gate, as the webhook admitted it; ``more``: annotations by key
    without the prefix (``qos="batch"``)."""
    annotations = {MEMORY: memory, QUEUE: "true"}
    annotations.update({f"mipart.io/{k.replace('_', '-')}": v for k, v in more.items()})
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "annotations": annotations,
        },
        "spec": {
            "schedulerName": SCHEDULER,
            "schedulingGates": [{"name": QUEUE_GATE}],
            "containers": [{"name": "vllm", "image": "vllm"}],
        },
        "status": {"phase": "Pending"},
    }


def running_pod(name: str, node: str, partition: str, memory_bytes: int) -> dict[str, Any]:
    """A pod the extender bound earlier, running on ``partition``."""
    text = json.dumps(
        {"v": 1, "node": node, "partitions": [partition], "memoryBytes": memory_bytes}
    )
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "annotations": {MEMORY: str(memory_bytes), ALLOCATION: text},
        },
        "spec": {"schedulerName": SCHEDULER, "nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running"},
    }


class FakeKube:
    """What the controller and the extender call of KubeApi, over ``self.state``."""

    def __init__(self) -> None:
        self._version = 100
        self.state = ClusterState(cast(KubeApi, self), scheduler_name=SCHEDULER)
        self.patches: list[tuple[str, list[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self.gpunode_patches: list[tuple[str, Any]] = []

    @property
    def api(self) -> KubeApi:
        return cast(KubeApi, self)

    # -- the cluster's objects, as the watches would deliver them ----------------------------

    def put_gpunode(self, obj: dict[str, Any]) -> None:
        self._put(self.state.gpunodes, obj)

    def put_pod(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._put(self.state.pods, obj)

    def pod(self, name: str) -> dict[str, Any]:
        found = self.state.pods.get(f"{NAMESPACE}/{name}")
        assert found is not None, name
        return found

    def allocation(self, name: str) -> Allocation | None:
        """The allocation the pod got at bind, read back as every component reads it."""
        meta = self.pod(name)["metadata"]
        text = (meta.get("annotations") or {}).get(ALLOCATION)
        return None if text is None else decode(text, pod=f"{NAMESPACE}/{name}", pod_uid="u")

    def _put(self, informer: Informer, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._version)
        key = object_key(obj)
        old = informer.get(key)
        with informer._lock:
            informer._items[key] = obj
        informer._emit(key, old, obj)
        return obj

    # -- KubeApi ------------------------------------------------------------------------

    def json_patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        self.patches.append((path, operations))
        pod = copy.deepcopy(self._pod_at(path))
        for op in operations:
            _apply(pod, op)
        return self.put_pod(pod)

    def post(self, path: str, body: Any) -> Any:
        if path.endswith("/binding"):
            pod = copy.deepcopy(self._pod_at(path))
            if pod["metadata"]["uid"] != body["metadata"]["uid"]:
                raise KubeError(409, "Conflict", "uid precondition")
            if pod["spec"].get("nodeName"):
                raise KubeError(409, "Conflict", "already bound")
            pod["spec"]["nodeName"] = body["target"]["name"]
            pod["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
            return self.put_pod(pod)
        self.events.append(body)
        return body

    def merge_patch(self, path: str, body: Any) -> Any:
        self.gpunode_patches.append((path, body))
        return body

    def get(self, path: str, **query: str) -> Any:
        if "/pods/" in path:
            return self._pod_at(path)
        return {"items": []}

    def _pod_at(self, path: str) -> dict[str, Any]:
        parts = path.split("/")  # /api/v1/namespaces/<ns>/pods/<name>[/binding]
        found = self.state.pods.get(f"{parts[4]}/{parts[6]}")
        if found is None:
            raise KubeError(404, "NotFound", path)
        return found


def _apply(obj: dict[str, Any], op: dict[str, Any]) -> None:
    """One RFC 6902 operation of the kinds the controller writes: test, remove, add."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
    parent: Any = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    key: Any = int(last) if isinstance(parent, list) else last
    if op["op"] == "test":
        if parent[key] != op["value"]:
            raise KubeError(422, "Invalid", f"test failed at {op['path']}")
    elif op["op"] == "remove":
        del parent[key]
    elif op["op"] == "add":
        if isinstance(parent, list):
            parent.insert(key, op["value"])
        else:
            parent[key] = op["value"]
    else:
        raise AssertionError(f"unexpected op {op['op']}")
