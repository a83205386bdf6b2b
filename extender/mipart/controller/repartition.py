"""The re-partition loop: every few seconds, ask the planner (mipart.planner) what idle
GPUs should become for the pods that wait, and write its decisions into GPUNode.spec, which
the daemons reconcile. Every decision and every held-back change is an Event on the GPUNode
and a metric.

What waits: pods behind the queue gate, and released pods the scheduler found no room for
(PodScheduled=False, Unschedulable), in queue order, each with the promise the last plan gave
it (where it counted the pod), so that the next plan keeps it. Released pods not bound yet
that are held to partitions (``mipart.io/planned-partitions``, unexpired) count as
allocations there: no plan gives their partitions to anyone else.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from mipart.cluster.reporter import EventReporter
from mipart.cluster.view import ClusterState
from mipart.contract.resources import CONTROLLER_COMPONENT
from mipart.controller import gpunodes
from mipart.controller.defragmenter import Defragmenter
from mipart.controller.pods import is_gated, is_in_flight, is_unschedulable, qos_of, queued_pod
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.events import CLUSTER_EVENTS_NAMESPACE, gpunode_reference, post_event
from mipart.kube.objects import allocation_of
from mipart.placement import Allocation, QosClass
from mipart.planner import Decision, NodeSnapshot, Plan, PlannerPolicy, Promise, Waiting, plan
from mipart.queue import QueuedPod, order
from mipart.runtime.periodic import Periodic

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Admissions:
    """Which waiting pods the plan lets go now, each with where it counted them (pod UID ->
    Promise: node, partitions that exist now, compute mode); the queue releases only these,
    held to those partitions (and pods of mode "any" to that mode)."""

    at: float  # time.monotonic() of the plan
    promises: dict[str, Promise]


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
        events: EventReporter,
        retry_refused_s: float = 60.0,
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
        # Where the last plan counted each pod it admitted or promised (pod UID -> Promise):
        # given back with the pod next round, so the planner keeps it.
        self._promises: dict[str, Promise] = {}
        self._defragmenter = Defragmenter(
            api, events, self._event, registry, protect_s=retry_refused_s
        )
        self._loop = Periodic("repartition", interval_s, self.round)

    def admissions(self) -> Admissions | None:
        """The latest plan's admissions, if it is recent enough to act on."""
        latest = self._admissions
        if latest is None or time.monotonic() - latest.at > 3 * self._interval_s:
            return None
        return latest

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> bool:
        """Whether the loop has ended (Periodic.stop)."""
        return self._loop.stop()

    def round(self) -> Plan:
        objects = {g["metadata"]["name"]: g for g in self._state.gpunodes.items()}
        now_utc = gpunodes.now_utc()
        snapshots = [
            gpunodes.snapshot(g, now=now_utc, stale_after_s=self._stale_after_s)
            for g in objects.values()
        ]
        pods = self._state.pods.items()
        waiting = [
            queued_pod(p, now=now_utc)
            for p in pods
            if is_gated(p) or (is_unschedulable(p) and not (p.get("spec") or {}).get("nodeName"))
        ]
        queue = order(q for q in waiting if q is not None)
        demand = [
            Waiting(q.request, since=q.created, name=q.key, promise=self._promise_of(q))
            for q in queue
        ]
        allocations = self._state.locked(lambda view: view.allocations())
        in_flight = (queued_pod(p, now=now_utc) for p in pods if is_in_flight(p))
        held = _holds(in_flight, snapshots, {a.pod_uid for a in allocations})
        now = time.time()
        classes = self._classes(pods) if self._policy.defragment else None
        decided = plan(snapshots, [*allocations, *held], demand, now=now, policy=self._policy,
                       classes=classes)  # fmt: skip
        self._promises = {
            queue[a.position].uid: a.promise for a in (*decided.admitted, *decided.promised)
        }
        self._admissions = Admissions(
            time.monotonic(), {queue[a.position].uid: a.promise for a in decided.admitted}
        )
        by_node: dict[str, list[Decision]] = defaultdict(list)
        for decision in decided.decisions:
            by_node[decision.node].append(decision)
        for node, decisions in by_node.items():
            self._apply(objects[node], decisions, now)
        if decided.evictions:
            by_uid = {p["metadata"]["uid"]: p for p in pods}
            bound = {a.pod_uid: a for a in allocations}
            for eviction in decided.evictions:
                self._defragmenter.carry_out(eviction, objects[eviction.node], bound, by_uid)
        for deferral in decided.deferrals:
            self.deferrals.labels(deferral.hold.value).inc()
            key = (deferral.node, deferral.gpus)
            if self._deferred.get(key) != deferral.reason:
                self._deferred[key] = deferral.reason
                self._event(objects[deferral.node], "RepartitionHeld", deferral.reason)
        return decided

    def _classes(self, pods: list[dict[str, Any]]) -> dict[str, QosClass]:
        """Each bound pod's QoS class, for defragmentation; pods a budget refused lately are
        left out, so the planner looks at other GPUs."""
        protected = self._defragmenter.protected()
        return {
            p["metadata"]["uid"]: qos_of(p)
            for p in pods
            if allocation_of(p) is not None
            and p["metadata"]["uid"] not in protected
            and not p["metadata"].get("deletionTimestamp")
        }

    def _promise_of(self, pod: QueuedPod) -> Promise | None:
        """Where the last plan counted ``pod``; else, for a released pod the scheduler found
        no room for, the hold it carries (so a restarted controller keeps it too)."""
        promise = self._promises.get(pod.uid)
        if promise is None and pod.held is not None and pod.request.compute_mode is not None:
            promise = Promise(pod.held.node, pod.held.partition_ids, pod.request.compute_mode)
        return promise

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

    def _event(
        self, gpunode: dict[str, Any], reason: str, note: str, warning: bool = False
    ) -> None:
        meta = gpunode["metadata"]
        post_event(
            self._api,
            gpunode_reference(meta["name"], meta.get("uid")),
            namespace=CLUSTER_EVENTS_NAMESPACE,
            reason=reason,
            note=note,
            warning=warning,
            controller=CONTROLLER_COMPONENT,
            instance=self._identity,
            action="Repartition",
        )


def _holds(
    in_flight: Iterable[QueuedPod | None], nodes: Iterable[NodeSnapshot], bound: set[str]
) -> list[Allocation]:
    """The partitions released pods not bound yet are held to, as allocations for the
    planner: its limit and sharing on each, as the extender will bind it. A hold on
    partitions its node does not report (any more) cannot be honoured, and an allocation there
    would stop every change on the node: it is left out."""
    reported = {n.name: {p.geometry.id for p in n.capacity.partitions} for n in nodes}
    return [
        Allocation(
            pod=pod.key,
            pod_uid=pod.uid,
            node=pod.held.node,
            partition_ids=pod.held.partition_ids,
            memory_bytes=pod.request.memory_bytes,
            sharing=pod.request.sharing,
        )
        for pod in in_flight
        if pod is not None
        and pod.held is not None
        and pod.uid not in bound
        and set(pod.held.partition_ids) <= reported.get(pod.held.node, set())
    ]


def _labels(decision: Decision) -> dict[str, str]:
    labels = decision.labels
    return {"kind": labels["kind"], "from": labels["from"], "to": labels["to"]}
