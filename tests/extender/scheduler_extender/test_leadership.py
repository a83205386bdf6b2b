"""Which kube-scheduler holds the Lease an extender follows."""

from __future__ import annotations

import pytest

from mipart.scheduler_extender.leadership import held_by

UUID = "3f1c2a5e-9b7d-4c1e-8a2f-6d0e4b7c9a11"


@pytest.mark.parametrize(
    ("holder", "host", "ours"),
    [
        (f"mipart-scheduler-7d9f_{UUID}", "mipart-scheduler-7d9f", True),
        # A host whose name starts with ours is another scheduler.
        (f"mipart-scheduler-7d9f0_{UUID}", "mipart-scheduler-7d9f", False),
        (f"mipart-scheduler-7_{UUID}", "mipart-scheduler-7d9f", False),
        ("mipart-scheduler-7d9f", "mipart-scheduler-7d9f", True),
        (None, "mipart-scheduler-7d9f", False),
        ("", "mipart-scheduler-7d9f", False),
    ],
)
def test_the_holder_is_matched_by_its_whole_host_name(
    holder: str | None, host: str, ours: bool
) -> None:
    assert held_by(holder, host) is ours
