"""mipart-controller's flags: bad values are refused before anything connects, by name."""

from __future__ import annotations

import math

import pytest

from mipart.controller.main import build_parser, main
from mipart.planner import PlannerPolicy


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_a_plan_aging_that_is_not_positive_is_refused_by_name(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--plan-aging", value]) == 2
    assert "--plan-aging: must be greater than 0" in capsys.readouterr().err


def test_plan_aging_defaults_to_the_planners_bound_and_takes_inf() -> None:
    assert build_parser().parse_args([]).plan_aging == PlannerPolicy().aging_s
    assert math.isinf(build_parser().parse_args(["--plan-aging", "inf"]).plan_aging)
