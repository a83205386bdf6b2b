"""Label selectors of PodDisruptionBudgets, as the preemption's budget check reads them."""

from __future__ import annotations

from typing import Any

import pytest

from mipart.controller.budgets import matches


def pod(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "x", "b": "2"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "y"}, False),
        (
            {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]},
            {"t": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
            {"t": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
        ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": "1"}, False),
        (
            {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "t", "operator": "Exists"}]},
            {"app": "x"},
            False,
        ),
    ],
)
def test_selectors(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    assert matches(selector, pod(**labels)) is selected
