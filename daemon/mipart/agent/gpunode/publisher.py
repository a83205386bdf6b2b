"""Mirror the node's partitions to its GPUNode: status on every change and as a heartbeat.

The daemon is the only writer of GPUNode.status (docs/extender.md#sources-of-truth). Free
memory in the status is derived, never stored: the partitions' memory minus the allocations of
the pods on this node that have not finished, read from the pods' ``mipart.io/allocation``
annotations.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import structlog

from mipart.agent.gpunode.layouts import LayoutRule, first_match
from mipart.agent.gpunode.status import gpunode_status
from mipart.agent.partitions.desired import DesiredLayoutReconciler
from mipart.agent.partitions.manager import PartitionManager
from mipart.contract.resources import GPUNODES
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.informer import Informer
from mipart.kube.objects import allocation_of
from mipart.placement import Allocation

log = structlog.get_logger(__name__)


class GpuNodePublisher:
    def __init__(
        self,
        api: KubeApi,
        node_name: str,
        manager: PartitionManager,
        *,
        reconciler: DesiredLayoutReconciler,
        heartbeat_s: float = 20.0,
        min_interval_s: float = 0.5,
        layouts: Sequence[LayoutRule] = (),
    ) -> None:
        self._api = api
        self._layouts = layouts
        self._reconciler = reconciler
        self._node = node_name
        self._manager = manager
        self._heartbeat_s = heartbeat_s
        self._min_interval_s = min_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.pods = Informer(
            api,
            "/api/v1/pods",
            name="node-pods",
            field_selector=f"spec.nodeName={node_name}",
            handler=lambda *_: self._on_pod(),
        )
        # The GPUNode as our last write left it (the PATCH answers with the whole object), so a
        # heartbeat costs one request, not a GET and a PATCH.
        self._current: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name="gpunode-publisher", daemon=True)
        self.published = threading.Event()  # set after the first successful write

    def start(self) -> None:
        self.pods.start()
        self._manager.add_listener(lambda _status: self._wake.set())
        self._reconciler.add_listener(self._wake.set)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.pods.stop()
        self._reconciler.stop()

    def _on_pod(self) -> None:
        self._wake.set()
        self._reconciler.wake()  # a pod gone may be the last one a drain waits for

    def occupants(self, gpus: tuple[int, ...]) -> list[str]:
        """The live allocations on ``gpus``, as "ns/pod on <partition>" (the manager's check).

        Until the pod cache has synced the answer is unknown, and unknown counts as busy.
        """
        if not self.pods.wait_synced(10):
            return ["the pods on this node (not listed yet)"]
        prefixes = tuple(f"gpu{g}-" for g in gpus)
        return [
            f"{a.pod} on {p}"
            for a in self.allocations()
            for p in a.partition_ids
            if p.startswith(prefixes)
        ]

    def allocated_bytes(self) -> int:
        return sum(a.total_bytes for a in self.allocations())

    def allocations(self) -> list[Allocation]:
        """The allocations of this node's pods that have not finished."""
        return [a for pod in self.pods.items() if (a := allocation_of(pod)) is not None]

    def _run(self) -> None:
        self.pods.wait_synced(30)
        while not self._stop.is_set():
            try:
                self._publish()
                self.published.set()
            except (KubeError, OSError) as err:
                log.warning("gpunode.publish_failed", node=self._node, error=str(err))
            self._wake.wait(self._heartbeat_s)
            self._wake.clear()
            self._stop.wait(self._min_interval_s)  # coalesce bursts of changes

    def _publish(self) -> None:
        current = self._current or self._get_or_create()
        report = self._reconciler.report()
        # The generation the reconcile acted on, not merely the one we have seen.
        previous = (current.get("status") or {}).get("observedGeneration", 0)
        observed = previous if report is None else report.generation
        body = gpunode_status(
            self._manager.status(),
            allocated_bytes=self.allocated_bytes(),
            previous_conditions=(current.get("status") or {}).get("conditions") or [],
            observed_generation=observed,
            extra_conditions=() if report is None else report.conditions,
        )
        # A merge patch replaces lists whole, which is what we want: the status is ours.
        try:
            self._current = dict(
                self._api.merge_patch(f"{GPUNODES}/{self._node}/status", {"status": body})
            )
        except KubeError as err:
            self._current = None
            if err.status != 404:
                raise
            self._publish()  # someone deleted the GPUNode: create it again and write

    def _get_or_create(self) -> dict[str, Any]:
        try:
            return dict(self._api.get(f"{GPUNODES}/{self._node}"))
        except KubeError as err:
            if err.status != 404:
                raise
        node = self._api.get(f"/api/v1/nodes/{self._node}")
        spec = self._first_spec(node["metadata"].get("labels") or {})
        created = self._api.post(
            GPUNODES,
            {
                "apiVersion": "mipart.io/v1alpha1",
                "kind": "GPUNode",
                "metadata": {
                    "name": self._node,
                    # Deleted with its Node by the garbage collector.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self._node,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": spec,
            },
        )
        log.info("gpunode.created", node=self._node, spec=spec)
        return dict(created)

    def _first_spec(self, labels: dict[str, str]) -> dict[str, Any]:
        """The first layout whose labels the Node has; none: keep what the GPUs run."""
        rule = first_match(self._layouts, labels)
        if rule is None:
            return {}
        inventory = self._manager.status().inventory
        if inventory is None:
            # Created with an empty spec, the GPUNode would never get this layout: wait.
            raise OSError("the GPUs are not read yet; the GPUNode is created once they are")
        log.info("gpunode.first_layout", node=self._node, labels=rule.match_labels)
        return rule.spec(len(inventory.gpus))
