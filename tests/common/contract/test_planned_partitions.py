"""The hold's text form (mipart.io/planned-partitions, mipart-controller -> the extender and
the controller): it reads back as written, and a bad one is refused naming the annotation and
what is allowed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.contract import planned_partitions
from mipart.contract.annotations import PLANNED_PARTITIONS
from mipart.contract.planned_partitions import InvalidHold, PlannedPartitions

partition_ids = st.lists(
    st.from_regex(r"gpu[0-7]-(spx|dpx|qpx|cpx)-[0-7]", fullmatch=True),
    min_size=1,
    max_size=8,
    unique=True,
)
holds = st.builds(
    PlannedPartitions,
    node=st.from_regex(r"[a-z][a-z0-9.-]{0,40}", fullmatch=True),
    partition_ids=partition_ids.map(tuple),
    expires=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ).map(lambda t: t.replace(microsecond=0)),
)


def test_the_key_is_mipart_written() -> None:
    assert PLANNED_PARTITIONS == "mipart.io/planned-partitions"


@given(holds)
def test_a_hold_reads_back_as_written(written: PlannedPartitions) -> None:
    text = planned_partitions.encode(written)
    raw = json.loads(text)
    assert raw["v"] == planned_partitions.VERSION
    assert raw["expires"].endswith("Z")
    assert planned_partitions.decode(text) == written


def test_the_text_form() -> None:
    hold = PlannedPartitions(
        "mi300x-03", ("gpu2-dpx-0",), datetime(2025, 6, 1, 12, 0, 0, 900_000, tzinfo=UTC)
    )
    assert planned_partitions.encode(hold) == (
        '{"v":1,"node":"mi300x-03","partitions":["gpu2-dpx-0"],"expires":"2025-06-01T12:00:00Z"}'
    )
    # Rounded down to the second: a hold never lasts longer than asked.
    assert planned_partitions.decode(planned_partitions.encode(hold)).expires < hold.expires
    assert hold.describe() == "mi300x-03 gpu2-dpx-0 until 2025-06-01T12:00:00Z"


def test_an_expiry_in_another_zone_is_written_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    hold = PlannedPartitions("n", ("gpu0-spx-0",), datetime(2025, 6, 1, 14, 0, tzinfo=paris))
    assert json.loads(planned_partitions.encode(hold))["expires"] == "2025-06-01T12:00:00Z"
    assert planned_partitions.decode(planned_partitions.encode(hold)) == hold


def test_a_hold_stands_until_it_expires() -> None:
    end = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    hold = PlannedPartitions("n", ("gpu0-spx-0",), end)
    assert hold.holds_at(end - timedelta(seconds=1))
    assert not hold.holds_at(end)
    with pytest.raises(ValueError, match="time zone"):
        PlannedPartitions("n", ("gpu0-spx-0",), datetime(2025, 6, 1))


GOOD = {"v": 1, "node": "n", "partitions": ["gpu0-spx-0"], "expires": "2025-06-01T12:00:00Z"}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("not json", "not JSON"),
        ("[1]", "expected a version 1 object"),
        (json.dumps({**GOOD, "v": 2}), "expected a version 1 object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "node"}), "missing 'node'"),
        (json.dumps({**GOOD, "node": ""}), "node must be a node name"),
        (json.dumps({**GOOD, "partitions": "gpu0-spx-0"}), "partitions must be a non-empty list"),
        (json.dumps({**GOOD, "partitions": []}), "partitions must be a non-empty list"),
        (json.dumps({**GOOD, "partitions": ["spx-0"]}), "partitions must be a non-empty list"),
        (json.dumps({**GOOD, "partitions": ["gpu0-spx-0"] * 2}), "listed twice"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "expires"}), "missing 'expires'"),
        (json.dumps({**GOOD, "expires": 1748779200}), "expires must be a UTC time"),
        (json.dumps({**GOOD, "expires": "2025-06-01 12:00"}), "'2025-06-01 12:00' is not a UTC"),
        (json.dumps({**GOOD, "expires": "2025-06-01T12:00:00+02:00"}), "is not a UTC time"),
    ],
)
def test_a_bad_hold_names_the_annotation_and_what_is_allowed(text: str, names: str) -> None:
    with pytest.raises(InvalidHold) as err:
        planned_partitions.decode(text)
    message = str(err.value)
    assert message.startswith(f"{PLANNED_PARTITIONS}: ")
    assert names in message
    assert "allowed: {" in message
    assert "written only by mipart-controller" in message


def test_a_long_bad_value_is_shortened_in_the_error() -> None:
    with pytest.raises(InvalidHold) as err:
        planned_partitions.decode("x" * 5000)
    assert len(str(err.value)) < 600
