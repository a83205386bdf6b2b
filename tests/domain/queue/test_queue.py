"""The QoS queue's decisions (mipart.queue)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout
from mipart.placement import Allocation, ClusterView, NodeCapacity, PartitionRequest, QosClass
from mipart.planner import Promise
from mipart.queue import (
    Awaiting,
    HeldPartitions,
    Preemption,
    QueuedPod,
    QueuePolicy,
    hold_to_plan,
    order,
    plan_preemption,
    plan_round,
)

GI = 2**30
SPX = ComputeMode.SPX


def one_gpu_view() -> ClusterView:
    """One SPX GPU: 191.98 GiB, i.e. room for 9 pods of 20 GiB (+1 GiB each)."""
    return ClusterView([NodeCapacity.from_layout("n1", NodeLayout(MemoryMode.NPS1, {0: SPX}))])


def pod(name: str, gib: float, qos: QosClass = QosClass.BATCH, created: float = 0.0) -> QueuedPod:
    return QueuedPod(f"ns/{name}", f"uid-{name}", PartitionRequest(int(gib * GI), qos=qos), created)


def test_order_is_class_then_arrival() -> None:
    pods = [
        pod("b1", 1, QosClass.BATCH, 1),
        pod("s1", 1, QosClass.STANDARD, 5),
        pod("l1", 1, QosClass.LATENCY, 9),
        pod("b0", 1, QosClass.BATCH, 0),
    ]
    assert [p.key for p in order(pods)] == ["ns/l1", "ns/s1", "ns/b0", "ns/b1"]


def test_releases_only_what_fits_and_leaves_the_view_as_it_was() -> None:
    view = one_gpu_view()
    queued = [pod(f"p{i}", 20, created=i) for i in range(12)]
    got = plan_round(view, queued, [], now=10, budget=100)
    assert [p.key for p, _ in got.released] == [f"ns/p{i}" for i in range(9)]
    assert [w.position for w in got.waiting] == [10, 11, 12]
    assert "no partition with" in got.waiting[0].reason
    assert view.allocations() == ()  # the scratch reservations are gone


def test_pods_released_and_not_yet_bound_take_their_room_first() -> None:
    view = one_gpu_view()
    in_flight = [pod(f"f{i}", 20) for i in range(8)]
    got = plan_round(view, [pod("q0", 20, created=1), pod("q1", 20, created=2)], in_flight,
                     now=10, budget=100)  # fmt: skip
    assert [p.key for p, _ in got.released] == ["ns/q0"]


def test_a_higher_class_goes_first_when_room_is_short() -> None:
    view = one_gpu_view()
    batch = [pod(f"b{i}", 20, created=i) for i in range(9)]
    latency = pod("l", 20, QosClass.LATENCY, created=100)
    got = plan_round(view, [*batch, latency], [], now=100, budget=100)
    assert got.released[0][0].key == "ns/l"
    assert "ns/b8" in [w.pod.key for w in got.waiting]


def test_young_pods_are_passed_and_old_ones_are_not() -> None:
    view = one_gpu_view()
    in_flight = [pod(f"f{i}", 20) for i in range(8)]  # 20 GiB left
    big, small = pod("big", 40, created=0), pod("small", 10, created=1)
    young = plan_round(view, [big, small], in_flight, now=10, budget=10)
    assert [p.key for p, _ in young.released] == ["ns/small"]  # backfill
    aged = plan_round(view, [big, small], in_flight, now=400, budget=10,
                      policy=QueuePolicy(bypass_after_s=300))  # fmt: skip
    assert aged.released == ()
    assert "behind ns/big" in aged.waiting[1].reason


def test_the_budget_bounds_a_round() -> None:
    got = plan_round(one_gpu_view(), [pod(f"p{i}", 1, created=i) for i in range(10)], [],
                     now=0, budget=3)  # fmt: skip
    assert len(got.released) == 3
    assert got.waiting[0].reason == "release rate reached; next round"


@given(st.lists(st.tuples(st.sampled_from(list(QosClass)), st.integers(1, 60)), max_size=30))
def test_never_releases_more_than_fits(pods: list[tuple[QosClass, int]]) -> None:
    view = one_gpu_view()
    queued = [pod(f"p{i}", gib, qos, created=i) for i, (qos, gib) in enumerate(pods)]
    got = plan_round(view, queued, [], now=0, budget=1000)
    released = [p for p, _ in got.released]
    assert sum(p.request.memory_bytes + GI for p in released) <= 196592 * 2**20
    assert len(released) + len(got.waiting) == len(queued)
    # Released in queue order, and each waiting pod says why.
    ranks = {p.key: i for i, p in enumerate(order(queued))}
    assert [ranks[p.key] for p in released] == sorted(ranks[p.key] for p in released)
    assert all(w.reason for w in got.waiting)


def two_gpu_view(*allocations: Allocation) -> ClusterView:
    layout = NodeLayout(MemoryMode.NPS1, {0: SPX, 1: SPX})
    return ClusterView([NodeCapacity.from_layout("n1", layout)], allocations)


def held(name: str, gpu: int, gib: float) -> Allocation:
    return Allocation(f"ns/{name}", f"uid-{name}", "n1", (f"gpu{gpu}-spx-0",), int(gib * GI))


def test_a_latency_pod_evicts_the_lowest_class_first_then_the_fewest_pods() -> None:
    # GPU 0: three batch pods of 60Gi; GPU 1: one standard pod of 100Gi and one batch of 80Gi.
    pods = [held("a", 0, 60), held("b", 0, 60), held("c", 0, 60), held("s", 1, 100),
            held("d", 1, 80)]  # fmt: skip
    view = two_gpu_view(*pods)
    classes = {p.pod_uid: QosClass.BATCH for p in pods} | {"uid-s": QosClass.STANDARD}
    chat = pod("chat", 150, QosClass.LATENCY)
    got = plan_preemption(view, chat, class_of=classes, leaving=())
    assert isinstance(got, Preemption)
    # Batch pods alone make room on GPU 0, so no standard pod goes, though GPU 1 would take
    # two evictions instead of three (kube-scheduler, too, prefers the node whose most
    # important victim is the least important).
    assert sorted(v.pod for v in got.victims) == ["ns/a", "ns/b", "ns/c"]
    # With GPU 0 protected, the standard pod may go too: the fewest pods on GPU 1.
    got = plan_preemption(view, chat, class_of=classes, leaving=(), protected={"uid-a"})
    assert isinstance(got, Preemption)
    assert sorted(v.pod for v in got.victims) == ["ns/d", "ns/s"]
    # A standard pod may only evict batch pods: GPU 0's three.
    standard = pod("std", 150, QosClass.STANDARD)
    got = plan_preemption(view, standard, class_of=classes, leaving=())
    assert isinstance(got, Preemption)
    assert sorted(v.pod for v in got.victims) == ["ns/a", "ns/b", "ns/c"]


def test_protected_and_leaving_pods_are_not_chosen_again() -> None:
    pods = [held("a", 0, 60), held("b", 0, 60), held("c", 0, 60), held("d", 1, 120)]
    view = two_gpu_view(*pods)
    classes = {p.pod_uid: QosClass.BATCH for p in pods}
    chat = pod("chat", 150, QosClass.LATENCY)
    got = plan_preemption(view, chat, class_of=classes, leaving=(), protected={"uid-d"})
    assert isinstance(got, Preemption)
    assert [v.pod for v in got.victims] != ["ns/d"]
    # Once d is leaving, its room is on its way: wait rather than evict more.
    assert plan_preemption(view, chat, class_of=classes, leaving={"uid-d"}) == Awaiting(1)
    everything = {p.pod_uid for p in pods}
    assert "no set" in str(plan_preemption(view, chat, class_of=classes, leaving=(),
                                           protected=everything))  # fmt: skip


def test_preemption_is_planned_with_the_room_already_set_aside() -> None:
    """The round asks about the first latency pod that fits nowhere, with the pods it
    releases before it still holding their room; and releases nothing behind it."""
    # Alone, evicting a (30Gi) would free GPU 0; but the 95Gi pod in flight is set aside on
    # GPU 0 (the only one with room), so only evicting b frees a whole GPU.
    pods = [held("a", 0, 30), held("b", 1, 100)]
    view = two_gpu_view(*pods)
    classes = {p.pod_uid: QosClass.BATCH for p in pods}
    asked: list[tuple[str, int]] = []

    def preempt(v: ClusterView, p: QueuedPod) -> tuple[object | None, str, bool]:
        asked.append((p.key, len(v.allocations())))
        outcome = plan_preemption(v, p, class_of=classes, leaving=())
        assert isinstance(outcome, Preemption)
        return outcome, outcome.description, True

    in_flight = [pod("flying", 95)]
    queued = [pod("l1", 150, QosClass.LATENCY, 1), pod("l2", 150, QosClass.LATENCY, 2),
              pod("small", 10, QosClass.BATCH, 3)]  # fmt: skip
    got = plan_round(view, queued, in_flight, now=10, budget=10, preempt=preempt)
    assert asked == [("ns/l1", 3)]  # asked once, with the in-flight pod's room reserved
    assert isinstance(got.preemption, Preemption)
    assert [v.pod for v in got.preemption.victims] == ["ns/b"]
    assert got.released == ()  # "small" would fit, but waits behind the preemption
    assert "behind ns/l1" in got.waiting[2].reason
    assert view.allocations() == tuple(pods)


def test_the_queue_follows_the_planners_admissions() -> None:
    cpx = ComputeMode.CPX
    asked = QueuedPod("ns/asked", "uid-asked", PartitionRequest(GI, compute_mode=SPX), 0)
    admitted, skipped = pod("admitted", 20), pod("skipped", 20)
    urgent = pod("urgent", 150, QosClass.LATENCY)
    eligible, held = hold_to_plan([asked, admitted, skipped, urgent], {"uid-admitted": cpx})
    assert [p.key for p in eligible] == ["ns/asked", "ns/admitted", "ns/urgent"]
    assert eligible[1].request.compute_mode is cpx  # held to the mode the plan counted
    assert eligible[0].request.compute_mode is SPX  # what a pod asked for stays
    assert eligible[2].request.compute_mode is None  # latency pods may preempt instead
    assert [p.key for p in held] == ["ns/skipped"]


def cpx_view() -> ClusterView:
    """One CPX GPU: eight 24 GiB partitions, each room for one 20 GiB pod."""
    cpx = ComputeMode.CPX
    return ClusterView([NodeCapacity.from_layout("n1", NodeLayout(MemoryMode.NPS1, {0: cpx}))])


def held_to(p: QueuedPod, *partitions: str) -> QueuedPod:
    return replace(p, held=HeldPartitions("n1", partitions))


def test_an_admitted_pod_is_held_to_the_partitions_the_plan_counted() -> None:
    cpx = ComputeMode.CPX
    promise = Promise("n1", ("gpu0-cpx-5",), cpx)
    asked = QueuedPod("ns/asked", "uid-asked", PartitionRequest(GI, compute_mode=cpx), 0)
    admitted, skipped = pod("admitted", 20), pod("skipped", 20)
    eligible, waiting = hold_to_plan(
        [asked, admitted, skipped], {"uid-admitted": promise, "uid-asked": promise}
    )
    assert [p.key for p in eligible] == ["ns/asked", "ns/admitted"]
    assert eligible[1].request.compute_mode is cpx
    assert eligible[1].held == HeldPartitions("n1", ("gpu0-cpx-5",))
    assert eligible[0].held == HeldPartitions("n1", ("gpu0-cpx-5",))  # a mode of its own too
    assert [p.key for p in waiting] == ["ns/skipped"]


def test_held_pods_have_their_room_set_aside_on_exactly_their_partitions() -> None:
    view = cpx_view()
    # Released and unbound, held to partition 0: the unheld pod of the same shape, which the
    # engine would put on partition 0 first, is counted elsewhere.
    flying = held_to(pod("flying", 20), "gpu0-cpx-0")
    free = pod("free", 20, created=1)
    mine = held_to(pod("mine", 20, created=2), "gpu0-cpx-3")
    got = plan_round(view, [free, mine], [flying], now=10, budget=10)
    rooms = {p.key: room.partition_ids for p, room in got.released}
    assert rooms == {"ns/free": ("gpu0-cpx-1",), "ns/mine": ("gpu0-cpx-3",)}
    assert all(room.pod_uid == p.uid for p, room in got.released)
    assert view.allocations() == ()


def test_a_held_pod_whose_partitions_are_taken_waits_and_does_not_preempt() -> None:
    view = cpx_view()
    flying = held_to(pod("flying", 20), "gpu0-cpx-2")
    late = held_to(pod("late", 20, QosClass.LATENCY, created=1), "gpu0-cpx-2")
    asked: list[str] = []

    def preempt(_view: ClusterView, p: QueuedPod) -> tuple[object | None, str, bool]:
        asked.append(p.key)
        return None, "nothing to evict", False

    got = plan_round(view, [late], [flying], now=10, budget=10, preempt=preempt)
    assert got.released == ()
    (waiting,) = got.waiting
    assert waiting.reason.startswith(
        "the partitions the re-partition planner counted it on (n1 gpu0-cpx-2): partition "
        "gpu0-cpx-2: 20Gi asked"
    )
    assert asked == []
    # An in-flight pod held to partitions that are gone cannot be set aside: said so.
    gone = plan_round(view, [], [held_to(pod("gone", 20), "gpu7-cpx-0")], now=10, budget=10)
    assert gone.unplaced_in_flight == ("ns/gone",)
