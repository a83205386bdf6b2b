"""Which pod is over which limit, and when it is reported (mipart.sizing)."""

from hypothesis import given
from hypothesis import strategies as st

from mipart.geometry import GpuProcess
from mipart.placement import Allocation
from mipart.sizing import LimitWatch, MemoryReading, PodMemory, read_pod_memory

GIB = 2**30
A_UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
B_UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def allocation(pod: str, uid: str, *partitions: str, gib: int = 10) -> Allocation:
    return Allocation(pod, uid, "node-1", partitions, gib * GIB)


def process(pid: int, partition: str, gib: float) -> GpuProcess:
    return GpuProcess(pid, "vllm", int(gib * GIB), partition)


def usage(reading: MemoryReading, pod: str, partition: str) -> PodMemory:
    (found,) = [m for m in reading.pods if (m.pod, m.partition_id) == (pod, partition)]
    return found


def test_a_pods_processes_on_a_partition_are_summed_against_its_limit() -> None:
    reading = read_pod_memory(
        [process(10, "gpu0-cpx-1", 8), process(11, "gpu0-cpx-1", 4)],
        {10: A_UID, 11: A_UID},
        [allocation("ns/a", A_UID, "gpu0-cpx-1")],
    )
    (only,) = reading.pods
    assert only == PodMemory("ns/a", A_UID, "gpu0-cpx-1", 12 * GIB, 10 * GIB, (10, 11))
    assert only.over_limit
    assert (only.namespace, only.name) == ("ns", "a")
    assert reading.unattributed == ()


def test_exactly_at_the_limit_is_not_over() -> None:
    reading = read_pod_memory(
        [process(10, "gpu0-cpx-1", 10)], {10: A_UID}, [allocation("ns/a", A_UID, "gpu0-cpx-1")]
    )
    assert not reading.pods[0].over_limit


def test_the_limit_applies_per_partition_not_to_the_sum() -> None:
    # A tensor-parallel pod: 10 GiB on each of two partitions, 20 GiB in all.
    reading = read_pod_memory(
        [process(10, "gpu0-spx-0", 11), process(11, "gpu1-spx-0", 2)],
        {10: A_UID, 11: A_UID},
        [allocation("ns/a", A_UID, "gpu0-spx-0", "gpu1-spx-0")],
    )
    assert usage(reading, "ns/a", "gpu0-spx-0").over_limit
    assert not usage(reading, "ns/a", "gpu1-spx-0").over_limit


def test_every_allocated_partition_is_read_even_when_unused() -> None:
    reading = read_pod_memory([], {}, [allocation("ns/a", A_UID, "gpu0-spx-0", "gpu1-spx-0")])
    assert [(m.partition_id, m.used_bytes, m.limit_bytes) for m in reading.pods] == [
        ("gpu0-spx-0", 0, 10 * GIB),
        ("gpu1-spx-0", 0, 10 * GIB),
    ]


def test_memory_on_a_partition_the_pod_was_not_given_is_over_a_limit_of_zero() -> None:
    reading = read_pod_memory(
        [process(10, "gpu3-cpx-0", 1)], {10: A_UID}, [allocation("ns/a", A_UID, "gpu0-cpx-1")]
    )
    stray = usage(reading, "ns/a", "gpu3-cpx-0")
    assert (stray.limit_bytes, stray.over_limit) == (0, True)
    assert not usage(reading, "ns/a", "gpu0-cpx-1").over_limit


def test_pods_are_kept_apart_on_a_shared_partition() -> None:
    reading = read_pod_memory(
        [process(10, "gpu0-spx-0", 9), process(20, "gpu0-spx-0", 9)],
        {10: A_UID, 20: B_UID},
        [allocation("ns/a", A_UID, "gpu0-spx-0"), allocation("ns/b", B_UID, "gpu0-spx-0")],
    )
    assert [(m.pod, m.used_bytes, m.pids) for m in reading.pods] == [
        ("ns/a", 9 * GIB, (10,)),
        ("ns/b", 9 * GIB, (20,)),
    ]
    assert not any(m.over_limit for m in reading.pods)


def test_processes_of_no_pod_or_of_a_pod_without_an_allocation_are_unattributed() -> None:
    host, foreign = process(10, "gpu0-spx-0", 50), process(20, "gpu0-spx-0", 50)
    reading = read_pod_memory(
        [host, foreign], {20: B_UID}, [allocation("ns/a", A_UID, "gpu0-spx-0")]
    )
    assert reading.unattributed == (host, foreign)
    assert usage(reading, "ns/a", "gpu0-spx-0").used_bytes == 0


def test_the_description_names_partition_usage_limit_and_pids() -> None:
    over = PodMemory("ns/a", A_UID, "gpu0-cpx-1", 12 * GIB + 1, 10 * GIB, (10, 11))
    assert over.describe() == "gpu0-cpx-1: 12.1Gi used, limit 10Gi (pids 10, 11)"


def reading_of(used_gib: float, uid: str = A_UID) -> MemoryReading:
    return read_pod_memory(
        [process(10, "gpu0-cpx-1", used_gib)], {10: uid}, [allocation("ns/a", uid, "gpu0-cpx-1")]
    )


def test_an_excursion_is_reported_once_and_rearms_only_below_the_limit() -> None:
    watch = LimitWatch()
    reported = [len(watch.update(reading_of(gib))) for gib in (8, 12, 12, 11, 10, 12, 13)]
    assert reported == [0, 1, 0, 0, 0, 1, 0]


def test_a_pod_that_goes_away_and_a_new_one_that_goes_over_are_each_reported() -> None:
    watch = LimitWatch()
    assert [m.pod_uid for m in watch.update(reading_of(12))] == [A_UID]
    assert watch.update(MemoryReading((), ())) == ()
    assert [m.pod_uid for m in watch.update(reading_of(12, B_UID))] == [B_UID]


def test_each_partition_of_a_pod_is_its_own_excursion() -> None:
    watch = LimitWatch()
    alloc = [allocation("ns/a", A_UID, "gpu0-spx-0", "gpu1-spx-0")]

    def step(gpu0: int, gpu1: int) -> list[str]:
        procs = [process(10, "gpu0-spx-0", gpu0), process(11, "gpu1-spx-0", gpu1)]
        new = watch.update(read_pod_memory(procs, {10: A_UID, 11: A_UID}, alloc))
        return [m.partition_id for m in new]

    assert step(11, 5) == ["gpu0-spx-0"]
    assert step(11, 11) == ["gpu1-spx-0"]
    assert step(11, 11) == []


@given(st.lists(st.integers(min_value=0, max_value=20), max_size=40))
def test_reports_equal_the_number_of_upward_crossings(series: list[int]) -> None:
    watch = LimitWatch()
    reported = sum(len(watch.update(reading_of(gib))) for gib in series)
    over = [gib > 10 for gib in series]
    crossings = sum(1 for i, o in enumerate(over) if o and (i == 0 or not over[i - 1]))
    assert reported == crossings
