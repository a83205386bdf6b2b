"""PodDisruptionBudgets against a whole set of victims.

The Eviction API checks one eviction at a time against the budget as it is now: two victims
under a budget that allows one disruption would both pass a dry run, and the second real
eviction would then be refused after the first pod is gone for nothing. So the set is checked
as a whole first: per budget, the victims it selects against its ``disruptionsAllowed``.
"""

from __future__ import annotations

from typing import Any

from mipart.kube.api import KubeApi


def over_budget(api: KubeApi, victims: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Budget (namespace/name) -> the victims (namespace/name) it cannot all let go."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for pod in victims:
        by_namespace.setdefault(pod["metadata"]["namespace"], []).append(pod)
    refused: dict[str, list[str]] = {}
    for namespace, pods in by_namespace.items():
        budgets = api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")
        for budget in budgets.get("items", []):
            selector = (budget.get("spec") or {}).get("selector")
            covered = [p for p in pods if selector is not None and matches(selector, p)]
            allowed = int((budget.get("status") or {}).get("disruptionsAllowed", 0))
            if len(covered) > allowed:
                name = f"{namespace}/{budget['metadata']['name']}"
                refused[name] = [f"{namespace}/{p['metadata']['name']}" for p in covered]
    return refused


def matches(selector: dict[str, Any], pod: dict[str, Any]) -> bool:
    """A LabelSelector against the pod's labels (an empty selector selects every pod)."""
    labels: dict[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True
