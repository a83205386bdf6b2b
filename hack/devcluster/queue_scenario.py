"""The QoS queue scenario shared by its test and its benchmark: many batch pods queued, then a
few latency pods; when each pod was created and when it was bound, as the API server told a
watch (not a poll, so the order of binds is the order they happened)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch

from hack.devcluster import kube
from hack.devcluster.procs import wait_until
from mipart.contract.annotations import MEMORY, MODEL, QOS, QUEUE
from mipart.contract.resources import QUEUE_GATE


@dataclass
class QueueRun:
    created: dict[str, float] = field(default_factory=dict)  # pod -> time.monotonic()
    bound: dict[str, float] = field(default_factory=dict)
    # Batch pods still behind the gate once every latency pod was created.
    gated_at_latency: set[str] = field(default_factory=set)

    def overtaken_by(self, prefix: str) -> list[str]:
        """Batch pods that were waiting when the ``prefix`` pods came, and were bound before
        the last of them was."""
        last = max(t for p, t in self.bound.items() if p.startswith(prefix))
        return sorted(p for p in self.gated_at_latency if self.bound[p] < last)

    def creation_to_bind(self, prefix: str) -> list[float]:
        return sorted(self.bound[p] - self.created[p] for p in self.created if p.startswith(prefix))


def queued_pod(name: str, qos: str, memory: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {
                MEMORY: memory,
                QOS: qos,
                QUEUE: "true",
            },
        },
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
    }


def queued_model_pod(name: str, qos: str, model: str, node: str) -> dict[str, Any]:
    """A queued pod that names its model (sized by the webhook) and must run on ``node``."""
    pod = queued_pod(name, qos, "unused")
    annotations = pod["metadata"]["annotations"]
    del annotations[MEMORY]
    annotations[MODEL] = model
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    return pod


def run(
    api: Any,
    namespace: str,
    *,
    batch: int = 300,
    latency: int = 5,
    memory: str = "4Gi",
    timeout: float = 300,
) -> QueueRun:
    result = QueueRun()
    core = kube.core(api)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_binds, args=(api, namespace, result, stop), daemon=True
    )
    watcher.start()

    def create(name: str, qos: str) -> None:
        core.create_namespaced_pod(namespace, queued_pod(name, qos, memory))
        result.created[name] = time.monotonic()

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: create(f"batch-{i:03d}", "batch"), range(batch)))
        for i in range(latency):
            create(f"latency-{i}", "latency")
        listing = core.list_namespaced_pod(namespace)
        result.gated_at_latency = {
            p.metadata.name
            for p in listing.items
            if p.metadata.name.startswith("batch-")
            and any(g.name == QUEUE_GATE for g in (p.spec.scheduling_gates or []))
        }
        wait_until(
            "every queued pod bound",
            lambda: len(result.bound) == batch + latency,
            timeout=timeout,
        )
    finally:
        stop.set()
    return result


def _watch_binds(api: Any, namespace: str, result: QueueRun, stop: threading.Event) -> None:
    core = kube.core(api)
    while not stop.is_set():
        new_watch: Any = watch.Watch  # the client's watch is untyped
        for event in new_watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=5):
            pod = event["object"]
            name = pod.metadata.name
            if pod.spec.node_name and name not in result.bound:
                result.bound[name] = time.monotonic()
            if stop.is_set():
                break
