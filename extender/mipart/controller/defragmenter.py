"""Carrying out the planner's defragmentation (``--defragment``, off by default): evict the
batch pods of a nearly empty GPU so that it can take a new mode for more urgent pods that wait
(docs/planner.md#defragmentation-opt-in).

The pods of one GPU go together or not at all (evictions.evict_together: PodDisruptionBudgets,
then a dry run). Each step is an Event: ``Defragmenting`` on the GPUNode with the planner's
reason, ``Defragmented`` on every evicted pod, ``DefragmentationRefused`` on the GPUNode when a
budget or the API server says no; and a metric. Pods that were refused are left out of the
next plans for a while, so the planner looks at another GPU. The evicted pods' owners recreate
them, and they queue again; the next round gives the idle GPU its mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from mipart.cluster.reporter import EventReporter
from mipart.controller.evictions import Refused, evict_together
from mipart.kube.api import KubeApi
from mipart.placement import Allocation
from mipart.planner import Eviction

log = structlog.get_logger(__name__)

# Posts an Event on a GPUNode: (the GPUNode, reason, note, warning).
NodeEvent = Callable[[dict[str, Any], str, str, bool], None]


class Defragmenter:
    def __init__(
        self,
        api: KubeApi,
        events: EventReporter,
        node_event: NodeEvent,
        registry: CollectorRegistry,
        *,
        protect_s: float = 60.0,
    ) -> None:
        self._api = api
        self._events = events  # on pods
        self._node_event = node_event  # on GPUNodes
        self._protect_s = protect_s
        self._protected: dict[str, float] = {}  # pod UID -> until (monotonic)
        self.gpus = Counter(
            "mipart_defrag_gpus_total",
            "GPUs the planner asked to free of their batch pods, by result (evicted, refused)",
            ["result"],
            registry=registry,
        )
        self.evicted = Counter(
            "mipart_defrag_evicted_pods_total",
            "Batch pods evicted to defragment a GPU",
            registry=registry,
        )

    def protected(self) -> frozenset[str]:
        """Pods a budget or the API server refused lately: not offered to the planner."""
        now = time.monotonic()
        self._protected = {uid: t for uid, t in self._protected.items() if t > now}
        return frozenset(self._protected)

    def carry_out(
        self,
        eviction: Eviction,
        gpunode: dict[str, Any],
        allocations: Mapping[str, Allocation],
        pods: Mapping[str, dict[str, Any]],
    ) -> bool:
        """Evict the pods of ``eviction`` (by UID); True if they were evicted."""
        victims = [allocations[uid] for uid in eviction.pod_uids if uid in allocations]
        if len(victims) != len(eviction.pod_uids):
            return False  # some are gone already: the next round sees the GPU as it is
        where = f"GPU {eviction.gpu} of {eviction.node}"
        outcome = evict_together(self._api, victims, pods)
        if isinstance(outcome, Refused):
            until = time.monotonic() + self._protect_s
            self._protected.update(dict.fromkeys(outcome.protect or eviction.pod_uids, until))
            self.gpus.labels("refused").inc()
            self._node_event(
                gpunode, "DefragmentationRefused", f"not freeing {where}: {outcome.why}", True
            )
            log.info("defrag.refused", node=eviction.node, gpu=eviction.gpu, why=outcome.why)
            return False
        self.gpus.labels("evicted").inc()
        self._node_event(gpunode, "Defragmenting", f"{where}: {eviction.reason}", False)
        for victim in outcome:
            self.evicted.inc()
            if victim.pod_uid in pods:
                self._events.warn(
                    pods[victim.pod_uid],
                    "Defragmented",
                    f"evicted from {where} so that it can become {eviction.target} for more "
                    "urgent pods that wait; its owner recreates it and it queues again",
                )
        log.info("defrag.evicted", node=eviction.node, gpu=eviction.gpu,
                 pods=[v.pod for v in outcome])  # fmt: skip
        return True
