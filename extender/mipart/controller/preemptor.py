"""Carrying out the queue's preemptions through the Eviction API.

Nothing is evicted unless every victim may go: the PodDisruptionBudgets covering the victims
are checked against the whole set (budgets.py), then each eviction is dry-run (the API
server's own answer, 429 while a budget forbids it), and only then are they evicted. A
refused victim is left out of the next choices for a while (``protect_s``), so the next
round picks another set or says none exists.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from mipart.cluster.reporter import EventReporter
from mipart.controller.budgets import over_budget
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.eviction import evict
from mipart.queue import Preemption

log = structlog.get_logger(__name__)

_TOO_MANY_REQUESTS = 429


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
        try:
            refused = over_budget(
                self._api, [pods[v.pod_uid] for v in preemption.victims if v.pod_uid in pods]
            )
        except (KubeError, OSError) as err:
            log.warning("queue.budgets_unreadable", error=str(err))
            return False
        if refused:
            names = {name for covered in refused.values() for name in covered}
            for victim in preemption.victims:
                if victim.pod in names:
                    self._protect(victim.pod_uid)
            return self._refused(
                preemptor,
                f"would evict {len(preemption.victims)} pod(s) on {preemption.node}, but "
                f"PodDisruptionBudget {', '.join(sorted(refused))} allows fewer disruptions",
            )
        for victim in preemption.victims:
            try:
                evict(self._api, victim.pod, victim.pod_uid, dry_run=True)
            except KubeError as err:
                if err.status == _TOO_MANY_REQUESTS:
                    self._protect(victim.pod_uid)
                log.info("queue.preemption_refused", pod=preemption.pod.key, victim=victim.pod)
                return self._refused(
                    preemptor,
                    f"would evict {victim.pod} on {preemption.node}, but the API server "
                    f"refused ({err.status}: {err.message})",
                )
        for victim in preemption.victims:
            try:
                evict(self._api, victim.pod, victim.pod_uid)
            except KubeError as err:
                log.warning("queue.eviction_failed", victim=victim.pod, status=err.status)
                if err.status == _TOO_MANY_REQUESTS:  # a budget changed since the check
                    self._protect(victim.pod_uid)
                    self.preemptions.labels("refused").inc()
                    return False
                continue  # gone meanwhile: its room is free anyway
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
