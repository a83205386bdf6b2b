"""Watch this node's GPUNode and hand its spec to the desired-layout reconcile."""

from __future__ import annotations

from typing import Any

import structlog

from mipart.agent.partitions.desired import DesiredLayoutReconciler, DesiredSpec
from mipart.contract.resources import GPUNODES
from mipart.geometry import ComputeMode, MemoryMode
from mipart.kube.api import KubeApi
from mipart.kube.informer import Informer

log = structlog.get_logger(__name__)


def parse_spec(obj: dict[str, Any]) -> DesiredSpec:
    """The CRD schema has validated the enums; the partition model validates combinations."""
    spec = obj.get("spec") or {}
    memory = spec.get("memoryPartition")
    compute: dict[int, ComputeMode] = {}
    drained: dict[int, bool] = {}
    for gpu in spec.get("gpus") or []:
        index = int(gpu["index"])
        if gpu.get("computePartition"):
            compute[index] = ComputeMode(gpu["computePartition"])
        if "drained" in gpu:
            drained[index] = bool(gpu["drained"])
    return DesiredSpec(
        generation=int(obj["metadata"].get("generation", 0)),
        memory=MemoryMode(memory) if memory else None,
        compute=compute,
        drained=drained,
    )


class SpecWatcher:
    """An informer on one GPUNode (fieldSelector on its name): a spec edit reaches the
    reconcile in one watch event, not at the next heartbeat."""

    def __init__(self, api: KubeApi, node_name: str, reconciler: DesiredLayoutReconciler) -> None:
        self._reconciler = reconciler
        self.informer = Informer(
            api,
            GPUNODES,
            name="own-gpunode",
            field_selector=f"metadata.name={node_name}",
            handler=self._on_change,
        )

    def start(self) -> None:
        self.informer.start()

    def stop(self) -> None:
        self.informer.stop()

    def uid(self) -> str | None:
        items = self.informer.items()
        return str(items[0]["metadata"]["uid"]) if items else None

    def _on_change(self, _key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            return  # deleted: the publisher recreates it with an empty spec
        if old is not None and old.get("spec") == new.get("spec"):
            return  # our own status writes
        try:
            spec = parse_spec(new)
        except (KeyError, ValueError, TypeError) as err:
            log.warning("gpunode.spec_unreadable", error=str(err))
            return
        log.info("gpunode.spec", generation=spec.generation)
        self._reconciler.submit(spec)
