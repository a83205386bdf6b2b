"""Evicting a set of pods together through the Eviction API, or none of them.

Shared by the queue's preemptions and the planner's defragmentation. The PodDisruptionBudgets
covering the set are checked against the whole set (budgets.py), then each eviction is
dry-run (the API server's own answer: 429 while a budget forbids it), and only then are they
evicted. A refusal says why and which pods to leave alone for a while, so that the next round
chooses others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from mipart.controller.budgets import over_budget
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.eviction import evict
from mipart.placement import Allocation

log = structlog.get_logger(__name__)

TOO_MANY_REQUESTS = 429


@dataclass(frozen=True, slots=True)
class Refused:
    why: str
    protect: frozenset[str]  # victim UIDs that a budget or the API server refused


def evict_together(
    api: KubeApi, victims: Sequence[Allocation], pods: Mapping[str, dict[str, Any]]
) -> list[Allocation] | Refused:
    """Evict every victim, or (when any may not go) none; the victims evicted."""
    try:
        refused = over_budget(api, [pods[v.pod_uid] for v in victims if v.pod_uid in pods])
    except (KubeError, OSError) as err:
        log.warning("eviction.budgets_unreadable", error=str(err))
        return Refused(f"the PodDisruptionBudgets could not be read ({err})", frozenset())
    if refused:
        names = {name for covered in refused.values() for name in covered}
        return Refused(
            f"PodDisruptionBudget {', '.join(sorted(refused))} allows fewer disruptions",
            frozenset(v.pod_uid for v in victims if v.pod in names),
        )
    for victim in victims:
        try:
            evict(api, victim.pod, victim.pod_uid, dry_run=True)
        except KubeError as err:
            protect = {victim.pod_uid} if err.status == TOO_MANY_REQUESTS else set()
            return Refused(
                f"the API server refused evicting {victim.pod} ({err.status}: {err.message})",
                frozenset(protect),
            )
    evicted: list[Allocation] = []
    for victim in victims:
        try:
            evict(api, victim.pod, victim.pod_uid)
        except KubeError as err:
            log.warning("eviction.failed", victim=victim.pod, status=err.status)
            if err.status == TOO_MANY_REQUESTS:  # a budget changed since the check
                return Refused(
                    f"PodDisruptionBudget refused evicting {victim.pod} after the check",
                    frozenset({victim.pod_uid}),
                )
            continue  # gone meanwhile: its room is free anyway
        evicted.append(victim)
    return evicted
