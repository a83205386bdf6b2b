"""The annotation API: what is accepted, and that every refusal names the annotation, the
value and what is allowed (table-driven, then fuzzed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.cluster.annotations import (
    AnnotationError,
    RequestCache,
    is_managed,
    parse_pod,
    parse_request,
)
from mipart.contract.annotations import (
    MEMORY,
    MODEL,
    PARTITION_MODE,
    PARTITIONS,
    PLANNED_MODE,
    PLANNED_PARTITIONS,
    QOS,
    SHARING,
)
from mipart.contract.planned_partitions import PlannedPartitions
from mipart.geometry import GPU_MEMORY_BYTES, ComputeMode
from mipart.placement import QosClass, Sharing, instance_budget

GI = 2**30


def test_defaults() -> None:
    request = parse_request({MEMORY: "20Gi"})
    assert request.memory_bytes == 20 * GI
    assert request.partitions == 1
    assert request.compute_mode is None
    assert request.qos is QosClass.STANDARD
    assert request.sharing is Sharing.SHARED


def test_everything_given() -> None:
    request = parse_request(
        {
            MEMORY: "160Gi",
            PARTITIONS: "4",
            PARTITION_MODE: "QPX",
            QOS: "latency",
            SHARING: "exclusive",
        }
    )
    assert request.memory_bytes == 40 * GI  # per partition
    assert request.partitions == 4
    assert request.compute_mode is ComputeMode.QPX
    assert request.qos is QosClass.LATENCY
    assert request.sharing is Sharing.EXCLUSIVE


def test_model_is_sized_by_the_estimator() -> None:
    small = parse_request({MODEL: "meta-llama/Llama-3.1-8B-Instruct"})
    assert 16 * GI < small.memory_bytes < 24 * GI  # 16 GB of weights, fits a CPX partition
    big = parse_request({MODEL: "Llama-3.1-70B-Instruct", PARTITIONS: "2"})
    assert 66 * GI < big.memory_bytes < 96 * GI  # half of 141 GB per partition


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({MEMORY: "lots"}, "mipart.io/memory: 'lots' is not valid; allowed: a byte quantity"),
        ({MEMORY: "0"}, "mipart.io/memory: '0' is not valid"),
        ({MEMORY: "-5Gi"}, "mipart.io/memory: '-5Gi' is not valid"),
        ({MEMORY: "8Gi", PARTITIONS: "3"}, "mipart.io/partitions: '3' is not valid; allowed: 1, 2, 4 or 8"),
        ({MEMORY: "8Gi", PARTITION_MODE: "TPX"}, "mipart.io/partition-mode: 'TPX' is not valid; allowed: any, SPX, DPX, QPX or CPX"),
        ({MEMORY: "8Gi", QOS: "urgent"}, "mipart.io/qos: 'urgent' is not valid; allowed: latency, standard or batch"),
        ({MEMORY: "8Gi", SHARING: "private"}, "mipart.io/sharing: 'private' is not valid; allowed: shared or exclusive"),
        ({MEMORY: "8Gi", "mipart.io/queue": "yes"}, "mipart.io/queue: 'yes' is not valid; allowed: \"true\""),
        ({MEMORY: "8Gi", "mipart.io/memroy": "8Gi"}, "mipart.io/memroy: unknown annotation; known: mipart.io/memory"),
        ({MEMORY: "8Gi", MODEL: "meta-llama/Llama-3.1-8B"}, "give exactly one"),
        ({QOS: "batch"}, "give exactly one"),
        ({MODEL: "gpt-17"}, "mipart.io/model: 'gpt-17':"),
        ({MEMORY: "24Gi", PARTITION_MODE: "CPX"}, "mipart.io/memory: needs 24Gi per partition, more than any CPX partition holds (22.9Gi usable by one vLLM instance of 23.9Gi, exclusive or shared); ask for less memory or more mipart.io/partitions, or a larger mipart.io/partition-mode"),
        ({MEMORY: "23.5Gi", PARTITION_MODE: "CPX", SHARING: "exclusive"}, "more than any CPX partition holds (22.9Gi usable"),
        ({MEMORY: "200Gi"}, "more than any SPX partition holds (190.9Gi usable by one vLLM instance of 191.9Gi, exclusive or shared); ask for less memory or more mipart.io/partitions"),
        ({MODEL: "Llama-3.1-70B-Instruct", PARTITION_MODE: "CPX"}, "mipart.io/model: needs"),
    ],
)  # fmt: skip
def test_refusals_name_the_annotation_value_and_allowed(
    annotations: dict[str, str], expected: str
) -> None:
    with pytest.raises(AnnotationError) as err:
        parse_request(annotations)
    assert expected in str(err.value)


@pytest.mark.parametrize("sharing", ["shared", "exclusive"])
def test_admission_draws_the_line_where_placement_does(sharing: str) -> None:
    """The largest limit an empty CPX partition gives one instance is admitted, one byte more
    is not, exclusive or shared (the placement engine's instance_budget)."""
    budget = instance_budget(GPU_MEMORY_BYTES // 8)
    fits = {MEMORY: str(budget), PARTITION_MODE: "CPX", SHARING: sharing}
    assert parse_request(fits).memory_bytes == budget
    with pytest.raises(AnnotationError, match="more than any CPX partition holds"):
        parse_request({**fits, MEMORY: str(budget + 1)})
    # Tensor parallel: the limit is per partition.
    assert parse_request({**fits, MEMORY: str(2 * budget), PARTITIONS: "2"}).partitions == 2
    with pytest.raises(AnnotationError, match="more than any CPX partition holds"):
        parse_request({**fits, MEMORY: str(2 * budget + 1), PARTITIONS: "2"})


def test_every_bad_annotation_is_reported_at_once() -> None:
    with pytest.raises(AnnotationError) as err:
        parse_request({MEMORY: "8Gi", QOS: "urgent", SHARING: "private"})
    assert len(err.value.problems) == 2


def test_foreign_annotations_are_ignored_but_ours_are_not() -> None:
    assert parse_request({MEMORY: "1Gi", "example.com/x": "y"}).memory_bytes == GI
    assert is_managed({MODEL: "x"})
    assert not is_managed({"mipart.io/qos": "batch"})
    assert not is_managed(None)


@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                [MEMORY, MODEL, PARTITIONS, PARTITION_MODE, QOS, SHARING, PLANNED_PARTITIONS]
            ),
            st.text(max_size=20).map(lambda t: "mipart.io/" + t),
        ),
        st.text(max_size=30),
        max_size=6,
    )
)
def test_any_input_either_parses_or_is_refused_clearly(annotations: dict[str, str]) -> None:
    problems: list[str] = []
    try:
        request = parse_request(annotations)
    except AnnotationError as err:
        problems = err.problems
    if problems:
        assert all(p.startswith("mipart.io/") for p in problems), problems
    else:
        assert request.memory_bytes > 0


def test_the_controllers_planned_mode_holds_a_pod_of_mode_any() -> None:
    planned = {MEMORY: "20Gi", "mipart.io/planned-mode": "CPX"}
    assert parse_request(planned).compute_mode is ComputeMode.CPX
    # A mode the user asked for wins; a bad planned mode is an error, not ignored.
    assert parse_request({**planned, PARTITION_MODE: "SPX"}).compute_mode is ComputeMode.SPX
    with pytest.raises(AnnotationError, match=r"mipart\.io/planned-mode: 'TPX' is not valid"):
        parse_request({MEMORY: "20Gi", "mipart.io/planned-mode": "TPX"})


def test_the_extender_parses_a_pod_version_once() -> None:
    cache = RequestCache(capacity=2)
    reads: list[str] = []

    def pod(version: str, memory: str = "20Gi") -> dict[str, Any]:
        return {
            "metadata": {"uid": "u1", "resourceVersion": version, "annotations": {MEMORY: memory}}
        }

    def request_of(p: dict[str, Any]) -> Any:
        def annotations() -> dict[str, str]:
            reads.append(p["metadata"]["resourceVersion"])
            return dict(p["metadata"]["annotations"])

        return cache.request_of(p, annotations)

    first = request_of(pod("1"))
    assert request_of(pod("1")) is first  # filter, prioritize, bind: one parse
    assert reads == ["1"]
    assert request_of(pod("2", "30Gi")).memory_bytes == 30 * GI  # a new version is read again
    assert reads == ["1", "2"]
    # Bad annotations are refused on every call, from the cache too.
    for _ in range(2):
        with pytest.raises(AnnotationError, match=r"mipart\.io/memory"):
            request_of(pod("3", "lots"))
    assert reads == ["1", "2", "3"]
    # Bounded: the oldest version is forgotten first.
    request_of(pod("1"))
    assert reads == ["1", "2", "3", "1"]
    # No UID or version (a hand-made body): parsed every time, never cached.
    unversioned = {"metadata": {"annotations": {MEMORY: "20Gi"}}}
    cache.request_of(unversioned, lambda: {MEMORY: "20Gi"})
    assert len(cache._answers) == 2


HOLD = '{"v":1,"node":"n1","partitions":["gpu0-cpx-3"],"expires":"2025-06-01T12:00:00Z"}'


def test_the_controllers_hold_is_read_with_the_request() -> None:
    parsed = parse_pod({MEMORY: "20Gi", PLANNED_MODE: "CPX", PLANNED_PARTITIONS: HOLD})
    assert parsed.request == parse_request({MEMORY: "20Gi", PLANNED_MODE: "CPX"})
    end = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parsed.hold == PlannedPartitions("n1", ("gpu0-cpx-3",), end)
    assert parsed.hold_at(datetime(2025, 6, 1, 11, 59, 59, tzinfo=UTC)) == parsed.hold
    assert parsed.hold_at(end) is None  # expired: ignored, the planned mode still applies
    assert parse_pod({MEMORY: "20Gi"}).hold is None


def test_a_bad_hold_is_a_clear_error_not_an_unknown_annotation() -> None:
    with pytest.raises(AnnotationError) as err:
        parse_request({MEMORY: "20Gi", PLANNED_PARTITIONS: "gpu0-cpx-3"})
    (problem,) = err.value.problems
    assert problem.startswith("mipart.io/planned-partitions: 'gpu0-cpx-3' is not valid (not JSON")
    assert "allowed: {" in problem
    assert "unknown annotation" not in str(err.value)
    # Reported with the other problems, not instead of them.
    with pytest.raises(AnnotationError) as both:
        parse_request({MEMORY: "lots", PLANNED_PARTITIONS: "{}"})
    assert len(both.value.problems) == 2


def test_the_cache_keeps_the_hold_of_each_pod_version() -> None:
    cache = RequestCache()
    reads: list[str] = []

    def parsed_of(version: str, annotations: dict[str, str]) -> Any:
        pod = {"metadata": {"uid": "u1", "resourceVersion": version}}

        def read() -> dict[str, str]:
            reads.append(version)
            return annotations

        return cache.parsed_of(pod, read)

    released = {MEMORY: "20Gi", PLANNED_MODE: "CPX", PLANNED_PARTITIONS: HOLD}
    assert parsed_of("1", {MEMORY: "20Gi"}).hold is None
    # The release is an update: a new version, read again, with its hold.
    first = parsed_of("2", released)
    assert first.hold is not None
    assert first.hold.node == "n1"
    assert parsed_of("2", released) is first
    assert reads == ["1", "2"]
    for _ in range(2):
        with pytest.raises(AnnotationError, match=r"mipart\.io/planned-partitions"):
            parsed_of("3", {**released, PLANNED_PARTITIONS: "{}"})
    assert reads == ["1", "2", "3"]
