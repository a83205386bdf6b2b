"""The queue's loop: each round, decide which gated pods to release (mipart.queue) and
remove their gate, at a bounded rate, with an Event on each pod when it is queued and when it
is released.

The state is the API's: the gate on the pod *is* the queue entry, so a restarted controller
finds the queue as it was. Its view of the cluster is the extender's ClusterState (GPUNodes
and allocations, watched), which it owns a copy of.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mipart.cluster.reporter import EventReporter
from mipart.cluster.view import ClusterState
from mipart.contract.planned_partitions import PlannedPartitions
from mipart.controller.kserve import InferenceServices
from mipart.controller.pods import (
    is_gated,
    is_in_flight,
    qos_of,
    queued_pod,
    release_patch,
)
from mipart.controller.preemptor import Preemptor
from mipart.controller.repartition import Admissions
from mipart.geometry import ComputeMode
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.informer import object_key
from mipart.kube.objects import allocation_of
from mipart.placement import ClusterView
from mipart.queue import (
    CLASS_ORDER,
    DEFAULT_POLICY,
    Awaiting,
    Preemption,
    QueuedPod,
    QueuePolicy,
    Round,
    hold_to_plan,
    plan_preemption,
    plan_round,
)
from mipart.runtime.periodic import Periodic

log = structlog.get_logger(__name__)

# How long a released pod is held to the partitions the plan counted it on (--plan-hold).
DEFAULT_HOLD_S = 120.0


@dataclass(frozen=True, slots=True)
class ReleaseRate:
    per_second: float = 20.0
    burst: int = 20


class QueueMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "mipart_queue_depth", "Gated pods waiting, by QoS class", ["qos"], registry=registry
        )
        self.wait = Histogram(
            "mipart_queue_wait_seconds",
            "From creation to release, by QoS class",
            ["qos"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
            registry=registry,
        )
        self.released = Counter(
            "mipart_queue_released_total", "Pods released, by QoS class", ["qos"], registry=registry
        )


class Releaser:
    def __init__(
        self,
        api: KubeApi,
        state: ClusterState,
        events: EventReporter,
        registry: CollectorRegistry,
        *,
        rate: ReleaseRate = ReleaseRate(),
        policy: QueuePolicy = DEFAULT_POLICY,
        interval_s: float = 0.25,
        retry_refused_s: float = 60.0,
        admissions: Callable[[], Admissions | None] | None = None,
        hold_s: float = DEFAULT_HOLD_S,
    ) -> None:
        self._api = api
        self._hold_s = hold_s
        self._state = state
        self._events = events
        self._services = InferenceServices(api)
        self._metrics = QueueMetrics(registry)
        self._admissions = admissions
        self._preemptor = Preemptor(api, events, registry, protect_s=retry_refused_s)
        self._rate = rate
        self._policy = policy
        self._tokens = float(rate.burst)
        self._last_refill = time.monotonic()
        self._announced: set[str] = set()  # pod UIDs told they are queued
        self._loop = Periodic("queue", interval_s, self.round)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> bool:
        """Whether the loop has ended (Periodic.stop)."""
        return self._loop.stop()

    def round(self) -> Round:
        pods = self._state.pods.items()
        now = time.time()
        now_utc = datetime.fromtimestamp(now, UTC)
        gated = {p["metadata"]["uid"]: p for p in pods if is_gated(p)}
        queued = [q for p in gated.values() if (q := queued_pod(p, now=now_utc)) is not None]
        everyone = queued
        admissions = None if self._admissions is None else self._admissions()
        held_back: list[QueuedPod] = []
        if admissions is not None:
            queued, held_back = hold_to_plan(queued, admissions.promises)
        # The modes to write on the pods released this round: those the plan chose for them.
        planned = {
            q.uid: promise.compute_mode
            for q in everyone
            if admissions is not None
            and q.request.compute_mode is None
            and (promise := admissions.promises.get(q.uid)) is not None
        }
        # Released and not bound yet: their room (their held partitions, if they carry a hold
        # that stands) is set aside before anything is released.
        in_flight = [
            q for p in pods if is_in_flight(p) and (q := queued_pod(p, now=now_utc)) is not None
        ]
        budget = self._take_tokens()
        held = [p for p in pods if allocation_of(p) is not None]
        class_of = {p["metadata"]["uid"]: qos_of(p) for p in held}
        leaving = {p["metadata"]["uid"] for p in held if p["metadata"].get("deletionTimestamp")}
        protected = self._preemptor.protected()

        def preempt(view: ClusterView, pod: QueuedPod) -> tuple[object | None, str, bool]:
            outcome = plan_preemption(
                view, pod, class_of=class_of, leaving=leaving, protected=protected
            )
            if isinstance(outcome, str):
                return None, outcome, False
            if isinstance(outcome, Awaiting):
                return None, outcome.description, True
            return outcome, outcome.description, True

        decided = self._state.locked(
            lambda view: plan_round(
                view,
                queued,
                in_flight,
                now=now,
                budget=budget,
                policy=self._policy,
                preempt=preempt,
            )
        )
        if isinstance(decided.preemption, Preemption):
            by_uid = {p["metadata"]["uid"]: p for p in pods}
            self._preemptor.carry_out(decided.preemption, by_uid)
        released = 0
        expires = now_utc + timedelta(seconds=self._hold_s)
        for pod, room in decided.released:
            mode = planned.get(pod.uid)
            hold = (
                None
                if pod.held is None
                else PlannedPartitions(pod.held.node, pod.held.partition_ids, expires)
            )
            if self._release(gated[pod.uid], pod, now, mode, hold):
                released += 1
                log.info(
                    "queue.released",
                    pod=pod.key,
                    qos=pod.qos.value,
                    likely=room.node,
                    held=None if hold is None else list(hold.partition_ids),
                )
        self._tokens -= released
        for waiting in decided.waiting:
            self._announce(
                gated[waiting.pod.uid],
                f"{waiting.pod.qos.value} queue, position {waiting.position} of "
                f"{len(everyone)}: {waiting.reason}",
            )
        for pod in held_back:
            self._announce(
                gated[pod.uid],
                f"{pod.qos.value} queue: waiting for the re-partition planner, which keeps the "
                "partitions that fit it for other pods or plans a change for it",
            )
        self._announced &= set(gated)
        self._observe_depth(everyone, {pod.uid for pod, _ in decided.released})
        return decided

    def _announce(self, pod: dict[str, Any], message: str) -> None:
        uid = pod["metadata"]["uid"]
        if uid not in self._announced:
            self._announced.add(uid)
            self._events.normal(pod, "Queued", message)
            service = self._services.of(pod)
            if service is not None:  # a KServe pod: said where its user looks too
                note = f"pod {pod['metadata']['name']}: {message}"
                self._events.normal_about(service, "Queued", note, for_pod=uid)

    def _release(
        self,
        pod: dict[str, Any],
        queued: QueuedPod,
        now: float,
        mode: ComputeMode | None,
        hold: PlannedPartitions | None,
    ) -> bool:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            self._api.json_patch(path, release_patch(pod, mode, hold))
        except KubeError as err:
            # Deleted, or its gates changed under us: the next round sees the new state.
            log.info("queue.release_skipped", pod=queued.key, status=err.status)
            return False
        self._metrics.released.labels(queued.qos.value).inc()
        self._metrics.wait.labels(queued.qos.value).observe(max(0.0, now - queued.created))
        held = "" if hold is None else f"; held to {hold.describe()}"
        self._events.normal(
            pod,
            "Released",
            f"room found for {queued.qos.value} pod {object_key(pod)} after "
            f"{now - queued.created:.1f} s in the queue{held}",
        )
        return True

    def _take_tokens(self) -> int:
        now = time.monotonic()
        self._tokens = min(
            float(self._rate.burst),
            self._tokens + (now - self._last_refill) * self._rate.per_second,
        )
        self._last_refill = now
        return int(self._tokens)

    def _observe_depth(self, queued: list[QueuedPod], released: set[str]) -> None:
        for qos in CLASS_ORDER:
            depth = sum(1 for q in queued if q.qos is qos and q.uid not in released)
            self._metrics.depth.labels(qos.value).set(depth)
