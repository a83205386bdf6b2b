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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--leader-elect-lease", "mipart-controller"],
         "--leader-elect-lease: 'mipart-controller' is not NAMESPACE/NAME"),
        (["--leader-elect-lease-duration", "0"], "--leader-elect-lease-duration: must be greater than 0"),
        (["--leader-elect-renew-deadline", "nan"], "--leader-elect-renew-deadline: must be greater than 0"),
        (["--leader-elect-retry-period", "-1"], "--leader-elect-retry-period: must be greater than 0"),
        (["--leader-elect-lease-duration", "10", "--leader-elect-renew-deadline", "10"],
         "--leader-elect-renew-deadline: must be less than --leader-elect-lease-duration (10 >= 10)"),
        (["--leader-elect-renew-deadline", "2", "--leader-elect-retry-period", "2"],
         "--leader-elect-retry-period: must be less than --leader-elect-renew-deadline (2 >= 2)"),
    ],
)  # fmt: skip
def test_leader_election_flags_out_of_range_are_refused_by_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_leader_election_is_on_by_default_with_client_go_timings() -> None:
    args = build_parser().parse_args([])
    assert args.leader_elect == "on"
    assert args.leader_elect_lease == "mipart-system/mipart-controller"
    assert (
        args.leader_elect_lease_duration,
        args.leader_elect_renew_deadline,
        args.leader_elect_retry_period,
    ) == (15, 10.0, 2.0)
