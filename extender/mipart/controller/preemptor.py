"""Carrying out the queue's preemptions through the Eviction API.

Nothing is evicted unless every victim may go (evictions.evict_together: budgets, then a dry
run, then the evictions). A refused victim is left out of the next choices for a while
(``protect_s``), so the next round picks another set or says none exists.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from mipart.cluster.reporter import EventReporter
from mipart.controller.evictions import Refused, evict_together
from mipart.kube.api import KubeApi
from mipart.queue import Preemption

log = structlog.get_logger(__name__)


class Preemptor:
    def __init__(
        self,
        api: KubeApi,
        events: EventReporter,
        registry: CollectorRegistry,
        *,
        protect_s: float = 60.0,
    ) -> None:
        self._api = api
        self._events = events
        self._protect_s = protect_s
        self._protected: dict[str, float] = {}  # victim UID -> until (monotonic)
        self.preemptions = Counter(
            "mipart_queue_preemptions_total",
            "Preemptions by latency pods, by result (evicted, refused)",
            ["result"],
            registry=registry,
        )
        self.victims = Counter(
            "mipart_queue_preempted_pods_total", "Pods evicted for latency pods", registry=registry
        )

    def protected(self) -> frozenset[str]:
        now = time.monotonic()
        self._protected = {uid: t for uid, t in self._protected.items() if t > now}
        return frozenset(self._protected)

    def carry_out(self, preemption: Preemption, pods: dict[str, dict[str, Any]]) -> bool:
        """Evict the victims if every one of them may go; True if they were evicted."""
        preemptor = pods[preemption.pod.uid]
        outcome = evict_together(self._api, preemption.victims, pods)
        if isinstance(outcome, Refused):
            for uid in outcome.protect:
                self._protect(uid)
            log.info("queue.preemption_refused", pod=preemption.pod.key, why=outcome.why)
            count = len(preemption.victims)
            return self._refused(
                preemptor, f"would evict {count} pod(s) on {preemption.node}, but {outcome.why}"
            )
        for victim in outcome:
            self.victims.inc()
            if victim.pod_uid in pods:
                self._events.warn(
                    pods[victim.pod_uid],
                    "Preempted",
                    f"evicted to make room for latency pod {preemption.pod.key} on "
                    f"{preemption.node}",
                )
        self.preemptions.labels("evicted").inc()
        self._events.normal(preemptor, "Preempting", preemption.description)
        log.info("queue.preempting", pod=preemption.pod.key, detail=preemption.description)
        return True

    def _protect(self, victim_uid: str) -> None:
        """Leave this victim alone for a while: a budget or the API server refused it."""
        self._protected[victim_uid] = time.monotonic() + self._protect_s

    def _refused(self, preemptor: dict[str, Any], why: str) -> bool:
        self.preemptions.labels("refused").inc()
        self._events.warn(preemptor, "PreemptionRefused", f"{why}; looking for other victims")
        return False
