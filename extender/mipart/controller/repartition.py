"""The re-partition loop: every few seconds, ask the planner (mipart.planner) what idle
GPUs should become for the pods that wait, and write its decisions into GPUNode.spec, which
the daemons reconcile. Every decision and every held-back change is an Event on the GPUNode
and a metric.

What waits: pods behind the queue gate, and released pods the scheduler found no room for
(PodScheduled=False, Unschedulable), in queue order.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from mipart.cluster.view import ClusterState
from mipart.contract.resources import CONTROLLER_COMPONENT
from mipart.controller import gpunodes
from mipart.controller.pods import is_gated, is_unschedulable, queued_pod
from mipart.geometry import ComputeMode
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.events import CLUSTER_EVENTS_NAMESPACE, gpunode_reference, post_event
from mipart.planner import Decision, Plan, PlannerPolicy, Waiting, plan
from mipart.queue import order
from mipart.runtime.periodic import Periodic

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Admissions:
    """Which waiting pods the plan lets go now, each with the compute mode it counted them on
    (pod UID -> mode); the queue releases only these, held to that mode."""

    at: float  # time.monotonic() of the plan
    modes: dict[str, ComputeMode]


class Repartitioner:
    def __init__(
        self,
        api: KubeApi,
        state: ClusterState,
        registry: CollectorRegistry,
        *,
        policy: PlannerPolicy,
        stale_after_s: float,
        identity: str,
        interval_s: float = 5.0,
    ) -> None:
        self._api = api
        self._state = state
        self._policy = policy
        self._stale_after_s = stale_after_s
        self._identity = identity
        self._deferred: dict[tuple[str, tuple[int, ...]], str] = {}  # last Event per change
        self.decisions = Counter(
            "mipart_planner_decisions_total",
            "Partition changes written to GPUNode.spec",
            ["kind", "from", "to"],
            registry=registry,
        )
        self.deferrals = Counter(
            "mipart_planner_deferrals_total",
            "Changes the planner wanted and held back, by why (settling, cooldown, bound)",
            ["hold"],
            registry=registry,
        )
        self._interval_s = interval_s
        self._admissions: Admissions | None = None
        self._loop = Periodic("repartition", interval_s, self.round)

    def admissions(self) -> Admissions | None:
        """The latest plan's admissions, if it is recent enough to act on."""
        latest = self._admissions
        if latest is None or time.monotonic() - latest.at > 3 * self._interval_s:
            return None
        return latest

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def round(self) -> Plan:
        objects = {g["metadata"]["name"]: g for g in self._state.gpunodes.items()}
        now_utc = gpunodes.now_utc()
        snapshots = [
            gpunodes.snapshot(g, now=now_utc, stale_after_s=self._stale_after_s)
            for g in objects.values()
        ]
        waiting = [
            queued_pod(p)
            for p in self._state.pods.items()
            if is_gated(p) or (is_unschedulable(p) and not (p.get("spec") or {}).get("nodeName"))
        ]
        queue = order(q for q in waiting if q is not None)
        demand = [Waiting(q.request, since=q.created, name=q.key) for q in queue]
        allocations = self._state.locked(lambda view: view.allocations())
        now = time.time()
        decided = plan(snapshots, allocations, demand, now=now, policy=self._policy)
        self._admissions = Admissions(
            time.monotonic(),
            {queue[a.position].uid: a.compute_mode for a in decided.admitted},
        )
        by_node: dict[str, list[Decision]] = defaultdict(list)
        for decision in decided.decisions:
            by_node[decision.node].append(decision)
        for node, decisions in by_node.items():
            self._apply(objects[node], decisions, now)
        for deferral in decided.deferrals:
            self.deferrals.labels(deferral.hold.value).inc()
            key = (deferral.node, deferral.gpus)
            if self._deferred.get(key) != deferral.reason:
                self._deferred[key] = deferral.reason
                self._event(objects[deferral.node], "RepartitionHeld", deferral.reason)
        return decided

    def _apply(self, gpunode: dict[str, Any], decisions: list[Decision], now: float) -> None:
        name = gpunode["metadata"]["name"]
        try:
            gpunodes.write(self._api, gpunode, decisions, now)
        except KubeError as err:  # 409: it changed meanwhile; the next round sees it
            log.info("planner.write_skipped", node=name, status=err.status, error=err.message)
            return
        for decision in decisions:
            self.decisions.labels(**_labels(decision)).inc()
            log.info("planner.decision", node=name, reason=decision.reason)
            self._event(gpunode, "Repartition", decision.reason)

    def _event(self, gpunode: dict[str, Any], reason: str, note: str) -> None:
        meta = gpunode["metadata"]
        post_event(
            self._api,
            gpunode_reference(meta["name"], meta.get("uid")),
            namespace=CLUSTER_EVENTS_NAMESPACE,
            reason=reason,
            note=note,
            warning=False,
            controller=CONTROLLER_COMPONENT,
            instance=self._identity,
            action="Repartition",
        )


def _labels(decision: Decision) -> dict[str, str]:
    labels = decision.labels
    return {"kind": labels["kind"], "from": labels["from"], "to": labels["to"]}
