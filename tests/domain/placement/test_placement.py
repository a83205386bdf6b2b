"""The placement engine: rules, reasons, topology, policy, the incremental view, preemption.

The property tests at the end drive a ClusterView through random clusters and request
sequences, placing only through the engine, and check it against brute force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import combinations

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mipart.geometry import (
    GPU_MEMORY_BYTES,
    ComputeMode,
    MemoryMode,
    NodeLayout,
    Rounding,
    format_bytes,
)
from mipart.placement import (
    INSTANCE_OVERHEAD_BYTES,
    Allocation,
    ClusterView,
    InvalidRequest,
    NodeCapacity,
    PartitionRequest,
    PartitionState,
    Placement,
    PlacementConflict,
    QosClass,
    Sharing,
    allocation_for,
    evaluate,
    instance_budget,
    instance_footprint,
    summarize_rejections,
    victims_for,
)
from mipart.placement._cluster_view import _CACHE_SHAPES, _key
from mipart.placement._types import Feasibility, Policy, policy_for

GI = 2**30
SPX, DPX, QPX, CPX = ComputeMode.SPX, ComputeMode.DPX, ComputeMode.QPX, ComputeMode.CPX
NPS1, NPS4 = MemoryMode.NPS1, MemoryMode.NPS4
SHARED, EXCLUSIVE = Sharing.SHARED, Sharing.EXCLUSIVE
CPX_BYTES = GPU_MEMORY_BYTES // 8
QPX_BYTES = GPU_MEMORY_BYTES // 4
OVERHEAD = INSTANCE_OVERHEAD_BYTES


def node(
    name: str,
    *modes: ComputeMode,
    memory: MemoryMode = NPS1,
    unhealthy: tuple[str, ...] = (),
    drained: tuple[int, ...] = (),
    ready: bool = True,
) -> NodeCapacity:
    layout = NodeLayout(memory, dict(enumerate(modes)))
    return NodeCapacity.from_layout(
        name, layout, unhealthy=unhealthy, drained_gpus=drained, ready=ready
    )


def alloc(
    node_name: str, pod: str, *partitions: str, gib: float, sharing: Sharing = SHARED
) -> Allocation:
    return Allocation(
        pod=f"default/{pod}",
        pod_uid=f"uid-{pod}",
        node=node_name,
        partition_ids=partitions,
        memory_bytes=int(gib * GI),
        sharing=sharing,
    )


def request(
    gib: float,
    partitions: int = 1,
    *,
    compute_mode: ComputeMode | None = None,
    qos: QosClass = QosClass.STANDARD,
    sharing: Sharing = SHARED,
) -> PartitionRequest:
    return PartitionRequest(int(gib * GI), partitions, compute_mode, qos, sharing)


def reason(req: PartitionRequest, n: NodeCapacity, *allocations: Allocation) -> str:
    result = evaluate(req, [n], allocations)
    assert n.name not in result.feasible, result.feasible
    return result.rejected[n.name]


# --- quantities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rounding", "text"),
    [
        (150 * GI, Rounding.NEAREST, "150Gi"),
        (int(23.9 * GI), Rounding.NEAREST, "23.9Gi"),
        (CPX_BYTES, Rounding.NEAREST, "24Gi"),
        (CPX_BYTES, Rounding.DOWN, "23.9Gi"),
        (GI + 1, Rounding.UP, "1.1Gi"),
        (GI + 1, Rounding.NEAREST, "1Gi"),
        (512 * 2**20, Rounding.NEAREST, "512Mi"),
        (3 * GI // 2, Rounding.NEAREST, "1.5Gi"),
        (2**40, Rounding.NEAREST, "1Ti"),
        (2048, Rounding.NEAREST, "2Ki"),
        (1023, Rounding.NEAREST, "1023"),
        (0, Rounding.NEAREST, "0"),
        (-GI - 1, Rounding.DOWN, "-1.1Gi"),
    ],
)
def test_format_bytes(amount: int, rounding: Rounding, text: str) -> None:
    assert format_bytes(amount, rounding) == text


# --- requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "partitions", "message"),
    [
        (0, 1, "must be positive"),
        (-GI, 1, "must be positive"),
        (GI, 3, "partitions: 3 is not one of 1, 2, 4, 8"),
        (GI, 16, "partitions: 16"),
    ],
)
def test_bad_requests_are_refused(memory: int, partitions: int, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        PartitionRequest(memory, partitions)


def test_bad_allocations_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="listed twice"):
        alloc("n", "a", "gpu0-cpx-0", "gpu0-cpx-0", gib=1)
    with pytest.raises(InvalidRequest, match="no partitions"):
        alloc("n", "a", gib=1)


def test_policy_defaults_by_qos_class() -> None:
    assert policy_for(QosClass.LATENCY) is Policy.SPREAD
    assert policy_for(QosClass.STANDARD) is Policy.BINPACK
    assert policy_for(QosClass.BATCH) is Policy.BINPACK


# --- rules and reasons ------------------------------------------------------------------

BUSY_SPX = alloc("n", "big", "gpu0-spx-0", gib=100)


@pytest.mark.parametrize(
    ("req", "capacity", "allocations", "expected"),
    [
        (request(1), node("n", SPX, ready=False), (), "node not ready: daemon heartbeat stale"),
        (request(1), node("n", SPX, CPX, drained=(0, 1)), (), "all GPUs drained"),
        (request(1), node("n"), (), "node reports no GPU partitions"),
        (
            request(1),
            node("n", SPX, unhealthy=("gpu0-spx-0",)),
            (),
            "no healthy partition on an undrained GPU",
        ),
        (
            request(1),
            node("n", SPX, DPX, unhealthy=("gpu0-spx-0",), drained=(1,)),
            (),
            "no healthy partition on an undrained GPU",
        ),
        (request(40), node("n", CPX, CPX), (), "CPX only: 23.9Gi partitions"),
        (
            request(23.5),
            node("n", CPX),
            (),
            "CPX only: 23.9Gi partitions (22.9Gi usable by an instance)",
        ),
        (
            request(23.5, sharing=EXCLUSIVE),
            node("n", CPX),
            (),
            "CPX only: 23.9Gi partitions (22.9Gi usable by an instance)",
        ),
        (request(60), node("n", QPX, CPX), (), "partitions too small: largest 47.9Gi (QPX)"),
        (request(30, compute_mode=CPX), node("n", SPX, CPX), (), "CPX partitions are 23.9Gi"),
        (request(1, compute_mode=CPX), node("n", SPX, DPX), (), "no usable CPX partition"),
        (
            request(1, compute_mode=CPX),
            node("n", SPX, CPX, drained=(1,)),
            (),
            "no usable CPX partition",
        ),
        (
            request(150),
            node("n", SPX),
            (BUSY_SPX,),
            "no partition with 150Gi free (largest free 89.9Gi)",
        ),
        (
            request(90, compute_mode=SPX),
            node("n", SPX, CPX),
            (BUSY_SPX,),
            "no SPX partition with 90Gi free (largest free 89.9Gi)",
        ),
        (
            request(10),
            node("n", SPX),
            (alloc("n", "x", "gpu0-spx-0", gib=5, sharing=EXCLUSIVE),),
            "no partition with 10Gi free (largest free 0)",
        ),
        (
            request(20, sharing=EXCLUSIVE),
            node("n", SPX),
            (BUSY_SPX,),
            "no idle partition with 20Gi usable (none idle)",
        ),
        (
            request(40, sharing=EXCLUSIVE),
            node("n", SPX, CPX),
            (BUSY_SPX,),
            "no idle partition with 40Gi usable (largest idle: 22.9Gi usable)",
        ),
        (
            request(40, 4),
            node("n", QPX),
            (alloc("n", "a", "gpu0-qpx-0", gib=40), alloc("n", "b", "gpu0-qpx-1", gib=40)),
            "needs 4 partitions with 40Gi free on one node, 2 fit",
        ),
        (
            request(40, 4),
            node("n", QPX, DPX),
            (alloc("n", "a", "gpu0-qpx-0", gib=40), alloc("n", "b", "gpu0-qpx-1", gib=40)),
            "needs 4 partitions of one compute mode with 40Gi free on one node, 2 fit",
        ),
        (
            request(20, 2, sharing=EXCLUSIVE, compute_mode=CPX),
            node("n", SPX, CPX, drained=(1,)),
            (),
            "no usable CPX partition",
        ),
        (
            request(20, 8, sharing=EXCLUSIVE),
            node("n", CPX),
            (alloc("n", "a", "gpu0-cpx-0", gib=1),),
            "needs 8 idle partitions with 20Gi usable on one node, 7 fit",
        ),
        (
            request(1),
            node("n", SPX),
            (alloc("n", "ghost", "mystery-partition", gib=1),),
            "holds allocations on partitions the node no longer reports",
        ),
        (
            request(1),
            node("n", SPX),
            (alloc("n", "ghost", "gpu0-cpx-3", gib=1),),
            "holds allocations on partitions the node no longer reports",
        ),
    ],
)
def test_rejection_reasons(
    req: PartitionRequest,
    capacity: NodeCapacity,
    allocations: tuple[Allocation, ...],
    expected: str,
) -> None:
    assert reason(req, capacity, *allocations) == expected


def test_an_unknown_node_is_rejected_with_a_reason() -> None:
    view = ClusterView([node("a", SPX)])
    result = view.evaluate(request(1), ["a", "b"])
    assert set(result.feasible) == {"a"}
    assert result.rejected == {"b": "no GPU inventory for this node"}
    answer = view.filter(request(1), ["b"])
    assert answer.unresolvable == {"b": "no GPU inventory for this node"}
    assert answer.rejected == {}


def test_an_allocation_on_a_vanished_partition_blocks_only_its_gpu() -> None:
    n = node("n", SPX, CPX)
    result = evaluate(request(1), [n], [alloc("n", "ghost", "gpu0-dpx-1", gib=1)])
    assert {p.split("-")[0] for p in result.feasible["n"].partition_ids} == {"gpu1"}


def test_the_usable_memory_rule() -> None:
    """Every instance holds its limit plus the reserve; a new one gets what is left less its
    own reserve."""
    assert OVERHEAD == GI
    assert instance_footprint(10 * GI) == 10 * GI + OVERHEAD
    assert instance_budget(CPX_BYTES) == CPX_BYTES - OVERHEAD
    assert instance_budget(GPU_MEMORY_BYTES, held_bytes=instance_footprint(10 * GI)) == (
        GPU_MEMORY_BYTES - 10 * GI - 2 * OVERHEAD
    )
    assert instance_budget(GI // 2) < 0


@pytest.mark.parametrize("sharing", [SHARED, EXCLUSIVE])
def test_an_empty_partition_gives_one_instance_its_budget_and_not_a_byte_more(
    sharing: Sharing,
) -> None:
    """Exclusive or shared, the same budget: the memory outside vLLM's budget is held either
    way. Evaluate, filter, reserve and preemption draw the line at the same byte."""
    n = node("n", SPX)
    budget = instance_budget(GPU_MEMORY_BYTES)
    assert budget == GPU_MEMORY_BYTES - OVERHEAD
    fits = PartitionRequest(budget, sharing=sharing)
    over = PartitionRequest(budget + 1, sharing=sharing)
    view = ClusterView([n])
    assert view.filter(fits).feasible == ("n",)
    placed = view.evaluate(fits).feasible["n"]
    assert placed.leftover_bytes == 0
    assert view.evaluate(over).rejected == {
        "n": "SPX only: 191.9Gi partitions (190.9Gi usable by an instance)"
    }
    assert view.filter(over).reasons() == view.evaluate(over).rejected

    # reserve() checks the same rule, and says both numbers.
    asked = format_bytes(budget + 1, Rounding.UP)
    usable = "usable on an idle partition" if sharing is EXCLUSIVE else "free for a shared pod"
    with pytest.raises(PlacementConflict, match=f"{asked} asked, 190.9Gi {usable}"):
        view.reserve(allocation_for(placed, over, pod="default/b", pod_uid="b"))
    held = allocation_for(placed, fits, pod="default/a", pod_uid="a")
    view.reserve(held)
    assert view.usage("n")[0].free_bytes == 0

    # Evicting the pod frees the partition's budget, and never more.
    assert victims_for(fits, n, [held], [held]) == (held,)
    assert victims_for(over, n, [held], [held]) is None


def test_shared_partition_takes_limits_plus_the_instance_reserve() -> None:
    n = node("n", CPX)
    largest = CPX_BYTES - OVERHEAD
    assert "n" in evaluate(PartitionRequest(largest), [n], []).feasible
    assert "n" not in evaluate(PartitionRequest(largest + 1), [n], []).feasible
    # After a 10Gi pod, the second one gets what is left minus both instances' reserves.
    first = alloc("n", "a", "gpu0-spx-0", gib=10)
    view = ClusterView([node("n", SPX)], [first])
    rest = GPU_MEMORY_BYTES - 2 * OVERHEAD - 10 * GI
    assert rest == instance_budget(GPU_MEMORY_BYTES, held_bytes=10 * GI + OVERHEAD)
    assert "n" in view.evaluate(PartitionRequest(rest)).feasible
    assert "n" not in view.evaluate(PartitionRequest(rest + 1)).feasible
    with pytest.raises(PlacementConflict, match="free for a shared pod"):
        view.reserve(replace(first, pod_uid="uid-b", memory_bytes=rest + 1))
    view.reserve(replace(first, pod_uid="uid-b", memory_bytes=rest))


def test_exclusive_takes_an_idle_partition_less_the_instance_reserve() -> None:
    n = node("n", CPX)
    budget = CPX_BYTES - OVERHEAD
    assert "n" in evaluate(PartitionRequest(budget, sharing=EXCLUSIVE), [n], []).feasible
    assert "n" not in evaluate(PartitionRequest(budget + 1, sharing=EXCLUSIVE), [n], []).feasible
    assert "n" not in evaluate(PartitionRequest(CPX_BYTES, sharing=EXCLUSIVE), [n], []).feasible
    busy = [alloc("n", f"p{i}", f"gpu0-cpx-{i}", gib=1) for i in range(7)]
    got = evaluate(request(20, sharing=EXCLUSIVE), [n], busy).feasible["n"]
    assert got.partition_ids == ("gpu0-cpx-7",)
    assert got.leftover_bytes == budget - 20 * GI


def test_an_exclusive_partition_is_never_shared() -> None:
    view = ClusterView([node("n", SPX)])
    view.reserve(alloc("n", "x", "gpu0-spx-0", gib=1, sharing=EXCLUSIVE))
    assert "n" not in view.evaluate(request(1)).feasible
    assert "n" not in view.evaluate(request(1, sharing=EXCLUSIVE)).feasible
    with pytest.raises(PlacementConflict, match="held exclusively"):
        view.reserve(alloc("n", "y", "gpu0-spx-0", gib=1))
    with pytest.raises(PlacementConflict, match="already allocated"):
        view.reserve(alloc("n", "z", "gpu0-spx-0", gib=1, sharing=EXCLUSIVE))


def test_conflict_answers_what_reserve_would_say_and_records_nothing() -> None:
    view = ClusterView([node("n", SPX)])
    first = alloc("n", "x", "gpu0-spx-0", gib=1, sharing=EXCLUSIVE)
    assert view.conflict(first) is None
    assert view.allocations() == ()
    view.reserve(first)
    assert view.conflict(first) is None  # the same allocation again: a retried bind
    second = alloc("n", "y", "gpu0-spx-0", gib=1)
    assert view.conflict(second) == "partition gpu0-spx-0 is held exclusively"
    with pytest.raises(PlacementConflict, match="default/y on n: partition gpu0-spx-0 is held"):
        view.reserve(second)
    moved = replace(first, partition_ids=("gpu0-spx-1",))
    assert view.conflict(moved) == "already holds an allocation on n"
    with pytest.raises(PlacementConflict, match=r"^default/x already holds an allocation on n$"):
        view.reserve(moved)
    assert view.conflict(alloc("m", "z", "gpu0-spx-0", gib=1)) == "no GPU inventory for this node"
    assert view.allocations() == (first,)


def test_drained_unhealthy_and_other_modes_are_not_used() -> None:
    n = node("n", CPX, CPX, QPX, unhealthy=("gpu1-cpx-0",), drained=(0,))
    got = evaluate(request(10, 8, compute_mode=CPX), [n], [])
    assert got.rejected["n"] == "needs 8 CPX partitions with 10Gi free on one node, 7 fit"
    placed = evaluate(request(10, 4, compute_mode=CPX), [n], []).feasible["n"]
    assert all(p.startswith("gpu1-") and p != "gpu1-cpx-0" for p in placed.partition_ids)


def test_summarize_rejections_groups_largest_first() -> None:
    rejected = {
        "a": "no partition with 150Gi free (largest free 96Gi)",
        "b": "CPX only: 24Gi partitions",
        "c": "no partition with 150Gi free (largest free 96Gi)",
        "d": "CPX only: 24Gi partitions",
        "e": "all GPUs drained",
        "f": "CPX only: 24Gi partitions",
    }
    assert summarize_rejections(rejected) == (
        "3 nodes: CPX only: 24Gi partitions; "
        "2 nodes: no partition with 150Gi free (largest free 96Gi); "
        "1 node: all GPUs drained"
    )
    assert summarize_rejections({}) == ""


def test_identical_situations_give_identical_reasons() -> None:
    nodes = [node(f"n{i}", CPX, CPX) for i in range(3)] + [node("s", SPX, ready=False)]
    result = evaluate(request(40), nodes, [])
    assert summarize_rejections(result.rejected) == (
        "3 nodes: CPX only: 23.9Gi partitions; 1 node: node not ready: daemon heartbeat stale"
    )


# --- topology ---------------------------------------------------------------------------


def test_tensor_parallel_prefers_one_gpu() -> None:
    n = node("n", CPX, CPX)
    busy = [alloc("n", "a", "gpu0-cpx-0", gib=20)]
    got = evaluate(request(10, 4), [n], busy).feasible["n"]
    assert len(got.gpus) == 1
    assert len(set(got.partition_ids)) == 4


def test_tensor_parallel_uses_the_fewest_gpus_when_none_has_room() -> None:
    n = node("n", QPX, QPX, QPX)
    # Each QPX GPU keeps 3, 3 and 2 partitions free for a 40Gi pod.
    busy = [
        alloc("n", "a", "gpu0-qpx-0", gib=40),
        alloc("n", "b", "gpu1-qpx-0", gib=40),
        alloc("n", "c", "gpu2-qpx-0", gib=40),
        alloc("n", "d", "gpu2-qpx-1", gib=40),
    ]
    got = evaluate(request(40, 4), [n], busy).feasible["n"]
    assert len(got.gpus) == 2
    assert got.compute_mode is QPX


def test_tensor_parallel_partitions_share_one_compute_mode() -> None:
    n = node("n", QPX, DPX)
    busy = [alloc("n", "a", "gpu0-qpx-0", gib=40), alloc("n", "b", "gpu0-qpx-1", gib=40)]
    # Two QPX and two DPX partitions fit 40Gi, but not four of one mode.
    assert "n" in evaluate(request(40, 2), [n], busy).feasible
    assert "n" not in evaluate(request(40, 4), [n], busy).feasible
    got = evaluate(request(40, 2), [n], busy).feasible["n"]
    assert len({pid.split("-")[1] for pid in got.partition_ids}) == 1


# --- policy -----------------------------------------------------------------------------


def test_binpack_fills_the_busy_gpu_and_spread_takes_the_empty_one() -> None:
    n = node("n", SPX, SPX)
    busy = [alloc("n", "a", "gpu0-spx-0", gib=100)]
    packed = evaluate(request(20), [n], busy).feasible["n"]
    spread = evaluate(request(20, qos=QosClass.LATENCY), [n], busy).feasible["n"]
    assert packed.partition_ids == ("gpu0-spx-0",)
    assert spread.partition_ids == ("gpu1-spx-0",)
    assert packed.policy is Policy.BINPACK
    assert spread.policy is Policy.SPREAD
    assert "binpack: 1 SPX on GPU 0" in packed.detail


def test_binpack_picks_the_tightest_partition_then_the_used_gpu() -> None:
    n = node("n", SPX, CPX, CPX)
    busy = [alloc("n", "a", "gpu2-cpx-3", gib=5)]
    # 12Gi fits tightest next to the 5Gi pod: 24574Mi - (5 + 1) - (12 + 1) Gi left.
    got = evaluate(request(12), [n], busy).feasible["n"]
    assert got.partition_ids == ("gpu2-cpx-3",)
    assert got.leftover_bytes == CPX_BYTES - 2 * OVERHEAD - 17 * GI
    # 20Gi does not fit there: equal fits on GPUs 1 and 2, and GPU 2 is in use already, so
    # GPU 1 stays idle for the re-partition planner. 20Gi fits tighter in 24Gi than in 192Gi.
    got = evaluate(request(20), [n], busy).feasible["n"]
    assert got.compute_mode is CPX
    assert got.gpus == (2,)
    assert got.leftover_bytes == CPX_BYTES - OVERHEAD - 20 * GI


def test_spread_picks_the_emptiest_and_largest_partition() -> None:
    n = node("n", SPX, CPX)
    got = evaluate(request(16, qos=QosClass.LATENCY), [n], []).feasible["n"]
    assert got.partition_ids == ("gpu0-spx-0",)
    busy = [alloc("n", "a", "gpu0-spx-0", gib=5)]
    got = evaluate(request(16, qos=QosClass.LATENCY), [n], busy).feasible["n"]
    assert got.compute_mode is CPX


def test_binpack_ranks_busy_nodes_first_and_spread_ranks_them_last() -> None:
    nodes = [node("empty", SPX, SPX), node("busy", SPX, SPX)]
    busy = [alloc("busy", "a", "gpu0-spx-0", gib=150), alloc("busy", "b", "gpu1-spx-0", gib=60)]
    packed = evaluate(request(20), nodes, busy).feasible
    spread = evaluate(request(20, qos=QosClass.LATENCY), nodes, busy).feasible
    assert packed["busy"].score > packed["empty"].score
    assert spread["busy"].score < spread["empty"].score
    assert all(0 <= p.score <= 10 for p in (*packed.values(), *spread.values()))


def test_an_explicit_policy_overrides_the_qos_default() -> None:
    n = node("n", SPX, SPX)
    busy = [alloc("n", "a", "gpu0-spx-0", gib=100)]
    got = evaluate(request(20, qos=QosClass.LATENCY), [n], busy, policy=Policy.BINPACK)
    assert got.feasible["n"].partition_ids == ("gpu0-spx-0",)


# --- the view ---------------------------------------------------------------------------


def test_allocations_before_their_node_are_applied_when_it_appears() -> None:
    view = ClusterView()
    view.add_allocation(alloc("n", "a", "gpu0-cpx-0", gib=20))
    assert view.evaluate(request(1), ["n"]).rejected["n"] == "no GPU inventory for this node"
    view.set_node(node("n", CPX))
    usage = {u.partition_id: u for u in view.usage("n")}
    assert usage["gpu0-cpx-0"].shared_bytes == 20 * GI
    assert usage["gpu0-cpx-0"].instances == 1
    assert usage["gpu0-cpx-0"].free_bytes == CPX_BYTES - 20 * GI - 2 * OVERHEAD
    assert view.capacity("n") == node("n", CPX)
    assert view.remove_node("n")
    assert not view.remove_node("n")
    assert view.capacity("n") is None
    assert len(view.allocations("n")) == 1
    view.set_node(node("n", CPX))
    assert next(iter(view.usage("n"))).instances == 1


def test_removing_an_allocation_frees_its_memory() -> None:
    view = ClusterView([node("n", CPX)])
    for i in range(8):
        view.reserve(alloc("n", f"p{i}", f"gpu0-cpx-{i}", gib=20))
    assert "n" not in view.evaluate(request(20)).feasible
    assert view.remove_allocation("uid-p3") is not None
    assert view.remove_allocation("uid-p3") is None
    assert view.evaluate(request(20)).feasible["n"].partition_ids == ("gpu0-cpx-3",)


def test_reserve_is_idempotent_and_refuses_a_second_allocation_for_a_pod() -> None:
    view = ClusterView([node("n", CPX)])
    first = alloc("n", "a", "gpu0-cpx-0", gib=5)
    view.reserve(first)
    view.reserve(first)
    assert len(view.allocations()) == 1
    with pytest.raises(PlacementConflict, match="already holds an allocation"):
        view.reserve(alloc("n", "a", "gpu0-cpx-1", gib=5))


@pytest.mark.parametrize(
    ("allocation", "message"),
    [
        (alloc("n", "a", "gpu0-cpx-0", gib=23), "22.9Gi free for a shared pod"),
        (alloc("n", "a", "gpu9-cpx-0", gib=1), "not reported by the node"),
        (alloc("n", "a", "gpu1-spx-0", gib=1), "not usable"),
        (alloc("n", "a", "gpu0-cpx-0", "gpu2-qpx-0", gib=1), "one compute mode"),
        (alloc("m", "a", "gpu0-cpx-0", gib=1), "no GPU inventory"),
    ],
)
def test_reserve_refuses_what_breaks_the_rules(allocation: Allocation, message: str) -> None:
    view = ClusterView([node("n", CPX, SPX, QPX, drained=(1,))])
    with pytest.raises(PlacementConflict, match=message):
        view.reserve(allocation)
    assert view.allocations() == ()


def test_observed_over_commit_is_recorded_and_blocks_the_partition() -> None:
    view = ClusterView([node("n", CPX)])
    view.add_allocation(alloc("n", "a", "gpu0-cpx-0", gib=20))
    view.add_allocation(alloc("n", "b", "gpu0-cpx-0", gib=20))  # a fact, even if wrong
    usage = {u.partition_id: u for u in view.usage("n")}["gpu0-cpx-0"]
    assert usage.free_bytes == 0
    assert "gpu0-cpx-0" not in view.evaluate(request(1)).feasible["n"].partition_ids


def test_add_allocation_replaces_the_pods_earlier_one() -> None:
    view = ClusterView([node("n", CPX)])
    view.add_allocation(alloc("n", "a", "gpu0-cpx-0", gib=20))
    view.add_allocation(alloc("n", "a", "gpu0-cpx-1", gib=20))
    used = {u.partition_id for u in view.usage("n") if u.instances}
    assert used == {"gpu0-cpx-1"}


def test_place_answers_for_one_node_or_raises_the_reason() -> None:
    view = ClusterView([node("n", CPX)])
    placement = view.place(request(10), "n")
    view.reserve(allocation_for(placement, request(10), pod="default/a", pod_uid="u1"))
    assert view.allocation("u1") is not None
    with pytest.raises(PlacementConflict, match="CPX only"):
        view.place(request(100), "n")


def test_a_change_invalidates_cached_answers() -> None:
    view = ClusterView([node("n", SPX)])
    req = request(100)
    assert "n" in view.evaluate(req).feasible
    assert "n" in view.filter(req).feasible
    view.reserve(alloc("n", "a", "gpu0-spx-0", gib=100))
    assert "n" in view.evaluate(req).rejected
    assert "n" in view.filter(req).rejected
    view.set_node(node("n", SPX, drained=(0,)))
    assert view.evaluate(req).rejected["n"] == "all GPUs drained"
    # No eviction can make room on a drained node: the scheduler must not try preemption.
    assert view.filter(req).unresolvable == {"n": "all GPUs drained"}
    view.remove_allocation("uid-a")
    view.set_node(node("n", SPX))
    assert "n" in view.evaluate(req).feasible
    assert view.filter(req) == Feasibility(("n",), {}, {})
    view.remove_node("n")
    assert view.filter(req) == Feasibility((), {}, {})
    assert view.filter(req, ["n"]).unresolvable == {"n": "no GPU inventory for this node"}


def test_filter_agrees_with_evaluate() -> None:
    nodes = [node("a", SPX), node("b", CPX), node("c", QPX, ready=False), node("d", DPX, DPX)]
    view = ClusterView(nodes, [alloc("d", "x", "gpu0-dpx-0", gib=60)])
    for req in (request(20), request(40, 2), request(60, 2), request(150), request(20, 8)):
        full, cheap = view.evaluate(req), view.filter(req)
        assert set(full.feasible) == set(cheap.feasible)
        assert full.rejected == cheap.reasons()
        assert view.scores(req) == {n: p.score for n, p in full.feasible.items()}


# --- preemption -------------------------------------------------------------------------


def test_no_victims_needed_when_it_fits() -> None:
    assert victims_for(request(10), node("n", SPX), [], []) == ()


def test_the_fewest_victims_then_the_least_memory() -> None:
    n = node("n", SPX)
    pods = [
        alloc("n", "small", "gpu0-spx-0", gib=10),
        alloc("n", "mid", "gpu0-spx-0", gib=20),
        alloc("n", "big", "gpu0-spx-0", gib=100),
    ]
    assert victims_for(request(150), n, pods, pods) == (pods[2],)
    a, b = alloc("n", "a", "gpu0-spx-0", gib=80), alloc("n", "b", "gpu0-spx-0", gib=90)
    assert victims_for(request(90), n, [a, b], [a, b]) == (a,)


def test_victims_only_among_candidates() -> None:
    n = node("n", SPX)
    keep = alloc("n", "keep", "gpu0-spx-0", gib=100)
    low = alloc("n", "low", "gpu0-spx-0", gib=50)
    assert victims_for(request(150), n, [keep, low], [low]) is None
    assert victims_for(request(80), n, [keep, low], [low]) == (low,)


def test_exclusive_needs_the_whole_partition_emptied() -> None:
    n = node("n", CPX)
    pods = [alloc("n", f"p{i}", f"gpu0-cpx-{i}", gib=1) for i in range(8)]
    extra = alloc("n", "extra", "gpu0-cpx-0", gib=1)
    victims = victims_for(request(20, sharing=EXCLUSIVE), n, [*pods, extra], [*pods, extra])
    assert victims is not None
    assert len(victims) == 1
    assert victims[0].partition_ids != ("gpu0-cpx-0",)


def test_tensor_parallel_victims_across_partitions() -> None:
    n = node("n", QPX)
    pods = [alloc("n", f"p{i}", f"gpu0-qpx-{i}", gib=30) for i in range(4)]
    tp = alloc("n", "tp", "gpu0-qpx-0", "gpu0-qpx-1", gib=10)
    victims = victims_for(request(40, 2), n, [*pods, tp], [*pods, tp])
    assert victims is not None
    assert len(victims) == 2


def test_eviction_cannot_fix_a_node_that_is_not_ready() -> None:
    n = node("n", SPX, ready=False)
    pod = alloc("n", "a", "gpu0-spx-0", gib=100)
    assert victims_for(request(150), n, [pod], [pod]) is None


def test_eviction_of_a_pod_on_a_vanished_partition_unblocks_its_gpu() -> None:
    n = node("n", SPX)
    ghost = alloc("n", "ghost", "gpu0-cpx-3", gib=1)
    assert victims_for(request(10), n, [ghost], [ghost]) == (ghost,)


def test_a_search_over_budget_still_returns_a_minimal_set() -> None:
    n = node("n", SPX)
    pods = [alloc("n", f"p{i:02}", "gpu0-spx-0", gib=9) for i in range(20)]
    victims = victims_for(request(100), n, pods, pods, max_checks=10)
    assert victims is not None
    remaining = [p for p in pods if p not in victims]
    assert "n" in evaluate(request(100), [n], remaining).feasible
    for spared in victims:
        assert "n" not in evaluate(request(100), [n], [*remaining, spared]).feasible


# --- properties -------------------------------------------------------------------------
# Random small clusters (1-2 GPUs a node, so brute force over partition sets stays cheap),
# driven only through the engine, checked against an independent brute-force model.

MODES_FOR = {NPS1: (SPX, DPX, QPX, CPX), NPS4: (QPX, CPX)}
SIZES_GIB = (0.5, 1, 5, 10, 16, 20, 22.9, 23, 30, 40, 46, 60, 90, 94.9, 100, 150, 189)

requests = st.builds(
    PartitionRequest,
    memory_bytes=st.sampled_from(SIZES_GIB).map(lambda g: int(g * GI)),
    partitions=st.sampled_from((1, 1, 1, 2, 4, 8)),
    compute_mode=st.none() | st.sampled_from((SPX, DPX, QPX, CPX)),
    qos=st.sampled_from(QosClass),
    sharing=st.sampled_from(Sharing),
)

# The pods that fill nodes up: mostly small, mostly shared, mostly one partition.
pod_requests = st.builds(
    PartitionRequest,
    memory_bytes=st.sampled_from((5, 10, 16, 20, 30, 40, 60, 90)).map(lambda g: g * GI),
    partitions=st.sampled_from((1, 1, 1, 2)),
    qos=st.sampled_from(QosClass),
    sharing=st.sampled_from((SHARED, SHARED, EXCLUSIVE)),
)


@st.composite
def capacities(draw: st.DrawFn, name: str, gpus: int | None = None) -> NodeCapacity:
    memory = draw(st.sampled_from((NPS1, NPS1, NPS4)))
    count = gpus if gpus is not None else draw(st.integers(1, 2))
    modes = [draw(st.sampled_from(MODES_FOR[memory])) for _ in range(count)]
    capacity = node(name, *modes, memory=memory)
    return draw(flags(capacity))


@st.composite
def flags(draw: st.DrawFn, capacity: NodeCapacity) -> NodeCapacity:
    ids = [p.geometry.id for p in capacity.partitions]
    gpus = sorted({p.geometry.gpu_index for p in capacity.partitions})
    sick = draw(st.sets(st.sampled_from(ids), max_size=2)) if ids else set()
    return replace(
        capacity,
        partitions=tuple(
            replace(p, healthy=p.geometry.id not in sick) for p in capacity.partitions
        ),
        drained_gpus=frozenset(draw(st.sets(st.sampled_from(gpus), max_size=1))),
        ready=draw(st.sampled_from((True, True, True, False))),
    )


Usage = dict[tuple[str, str], tuple[int, int, int]]


def brute_usage(allocations: Iterable[Allocation]) -> Usage:
    """(node, partition) -> (Σ limit + reserve, instances, exclusive instances).

    Written out with the constant, not with instance_budget: an oracle of its own."""
    usage: Usage = {}
    for a in allocations:
        for pid in a.partition_ids:
            held, instances, exclusive = usage.get((a.node, pid), (0, 0, 0))
            if a.sharing is EXCLUSIVE:
                exclusive += 1
            held += a.memory_bytes + OVERHEAD
            usage[(a.node, pid)] = (held, instances + 1, exclusive)
    return usage


def takes(
    capacity: NodeCapacity, part: PartitionState, usage: Usage, req: PartitionRequest
) -> bool:
    g = part.geometry
    if not capacity.ready or not part.healthy or g.gpu_index in capacity.drained_gpus:
        return False
    if req.compute_mode is not None and g.compute_mode is not req.compute_mode:
        return False
    held, instances, exclusive = usage.get((capacity.name, g.id), (0, 0, 0))
    if req.sharing is EXCLUSIVE and instances:
        return False
    return exclusive == 0 and req.memory_bytes + OVERHEAD <= g.memory_bytes - held


def brute_fits(capacity: NodeCapacity, usage: Usage, req: PartitionRequest) -> bool:
    """Some set of ``partitions`` partitions of one compute mode takes the request."""
    return any(
        len({p.geometry.compute_mode for p in combo}) == 1
        and all(takes(capacity, p, usage, req) for p in combo)
        for combo in combinations(capacity.partitions, req.partitions)
    )


def assert_never_over_committed(
    nodes: Mapping[str, NodeCapacity], allocations: Iterable[Allocation]
) -> None:
    usage = brute_usage(allocations)
    sizes = {
        (n.name, p.geometry.id): p.geometry.memory_bytes
        for n in nodes.values()
        for p in n.partitions
    }
    for key, (held, instances, exclusive) in usage.items():
        assert key in sizes, f"allocation on a partition that does not exist: {key}"
        assert held <= sizes[key], f"{key} over-committed"
        assert exclusive == 0 or instances == 1, f"{key} exclusive and shared"


PROBES = (
    request(5),
    request(20, sharing=EXCLUSIVE),
    request(40, 2, qos=QosClass.LATENCY),
    request(10, 4, compute_mode=CPX),
    request(90),
)


class PlacementMachine(RuleBasedStateMachine):
    """Random requests, removals, health changes and re-partitions against one ClusterView."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, NodeCapacity] = {}
        self.view = ClusterView()
        self.next_uid = 0

    @initialize(data=st.data(), count=st.integers(1, 3))
    def cluster(self, data: st.DataObject, count: int) -> None:
        for i in range(count):
            capacity = data.draw(capacities(f"node-{i}"))
            self.nodes[capacity.name] = capacity
        self.view = ClusterView(self.nodes.values())

    @rule(req=pod_requests, data=st.data())
    def place_a_common_pod(self, req: PartitionRequest, data: st.DataObject) -> None:
        self.place(req, data)

    @rule(req=requests, data=st.data())
    def place(self, req: PartitionRequest, data: st.DataObject) -> None:
        result = self.view.evaluate(req)
        assert set(result.feasible) | set(result.rejected) == set(self.nodes)
        assert not set(result.feasible) & set(result.rejected)
        cheap = self.view.filter(req)
        assert set(cheap.feasible) == set(result.feasible)
        assert cheap.reasons() == result.rejected
        usage = brute_usage(self.view.allocations())
        for name, reason_text in result.rejected.items():
            assert not brute_fits(self.nodes[name], usage, req), reason_text
            assert name not in reason_text
        for name, placement in result.feasible.items():
            self.check_placement(name, placement, req, usage)
        event(f"place: {len(result.feasible)} of {len(self.nodes)} nodes feasible")
        if result.feasible:
            chosen = data.draw(st.sampled_from(sorted(result.feasible)))
            self.next_uid += 1
            pod = f"default/pod-{self.next_uid}"
            allocation = allocation_for(
                result.feasible[chosen], req, pod=pod, pod_uid=f"uid-{self.next_uid}"
            )
            self.view.reserve(allocation)

    def check_placement(
        self, name: str, placement: Placement, req: PartitionRequest, usage: Usage
    ) -> None:
        capacity = self.nodes[name]
        parts = {p.geometry.id: p for p in capacity.partitions}
        assert placement.node == name
        assert len(placement.partition_ids) == req.partitions
        assert len(set(placement.partition_ids)) == req.partitions
        chosen = [parts[pid] for pid in placement.partition_ids]
        assert {p.geometry.compute_mode for p in chosen} == {placement.compute_mode}
        assert all(takes(capacity, p, usage, req) for p in chosen)
        assert 0 <= placement.score <= 10
        assert brute_fits(capacity, usage, req)

    @rule(data=st.data())
    def finish_a_pod(self, data: st.DataObject) -> None:
        allocations = self.view.allocations()
        if allocations:
            victim = data.draw(st.sampled_from(allocations))
            assert self.view.remove_allocation(victim.pod_uid) == victim

    @rule(data=st.data())
    def change_health_drains_or_readiness(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        self.nodes[name] = data.draw(flags(self.nodes[name]))
        self.view.set_node(self.nodes[name])

    @rule(data=st.data())
    def repartition_an_idle_gpu(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        capacity = self.nodes[name]
        busy = {pid.split("-")[0] for a in self.view.allocations(name) for pid in a.partition_ids}
        modes = {p.geometry.gpu_index: p.geometry.compute_mode for p in capacity.partitions}
        idle = sorted(g for g in modes if f"gpu{g}" not in busy)
        if not idle:
            return
        gpu = data.draw(st.sampled_from(idle))
        modes[gpu] = data.draw(st.sampled_from(MODES_FOR[capacity.memory_mode]))
        fresh = node(name, *(modes[g] for g in sorted(modes)), memory=capacity.memory_mode)
        self.nodes[name] = replace(fresh, drained_gpus=capacity.drained_gpus, ready=capacity.ready)
        self.view.set_node(self.nodes[name])

    @rule(data=st.data())
    def node_leaves_and_comes_back(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        assert self.view.remove_node(name)
        gone = self.view.evaluate(request(1), [name])
        assert gone.rejected == {name: "no GPU inventory for this node"}
        assert self.view.filter(request(1), [name]).reasons() == gone.rejected
        assert name not in self.view.node_names
        self.view.set_node(self.nodes[name])

    @rule(data=st.data(), gib=st.sampled_from(SIZES_GIB), sharing=st.sampled_from(Sharing))
    def reserve_something_arbitrary(
        self, data: st.DataObject, gib: float, sharing: Sharing
    ) -> None:
        """Whatever reserve() accepts must keep the invariant; what it refuses changes nothing."""
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        ids = [p.geometry.id for p in self.nodes[name].partitions]
        chosen = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=2, unique=True))
        self.next_uid += 1
        attempt = Allocation(
            pod=f"default/odd-{self.next_uid}",
            pod_uid=f"odd-{self.next_uid}",
            node=name,
            partition_ids=tuple(chosen),
            memory_bytes=int(gib * GI),
            sharing=sharing,
        )
        before = self.view.allocations()
        try:
            self.view.reserve(attempt)
        except PlacementConflict:
            event("arbitrary reserve: refused")
            assert self.view.allocations() == before
        else:
            event("arbitrary reserve: accepted")

    def teardown(self) -> None:
        count = len(self.view.allocations())
        event(f"allocations at the end: {'0' if not count else '1-3' if count < 4 else '4+'}")

    @invariant()
    def never_over_committed(self) -> None:
        assert_never_over_committed(self.nodes, self.view.allocations())

    @invariant()
    def incremental_state_equals_a_rebuild(self) -> None:
        rebuilt = ClusterView(self.nodes.values(), self.view.allocations())
        for name in self.nodes:
            assert self.view.usage(name) == rebuilt.usage(name)
        for probe in PROBES:
            assert self.view.evaluate(probe) == rebuilt.evaluate(probe)
            scores = {n: p.score for n, p in rebuilt.evaluate(probe).feasible.items()}
            assert self.view.scores(probe) == scores
            cheap, fresh = self.view.filter(probe), rebuilt.filter(probe)
            assert set(cheap.feasible) == set(fresh.feasible)
            assert cheap.rejected == fresh.rejected
            assert cheap.unresolvable == fresh.unresolvable
            # The scheduler may send a subset of the nodes, and names the view does not know.
            some = [*sorted(self.nodes)[::2], "not-a-gpu-node"]
            part = self.view.filter(probe, some)
            assert self.view.scores(probe, some) == {n: scores[n] for n in scores if n in some}
            assert set(part.feasible) == set(cheap.feasible) & set(some)
            assert part.reasons() == {
                **{n: r for n, r in cheap.reasons().items() if n in some},
                "not-a-gpu-node": "no GPU inventory for this node",
            }


TestPlacementMachine = PlacementMachine.TestCase
TestPlacementMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def crowded_nodes(draw: st.DrawFn) -> tuple[NodeCapacity, list[Allocation]]:
    """One ready node with up to 8 pods placed through the engine."""
    capacity = replace(draw(capacities("n", gpus=draw(st.integers(1, 2)))), ready=True)
    view = ClusterView([capacity])
    for i in range(draw(st.integers(1, 10))):
        req = draw(pod_requests)
        result = view.evaluate(req)
        if "n" in result.feasible:
            view.reserve(
                allocation_for(result.feasible["n"], req, pod=f"default/p{i}", pod_uid=f"u{i}")
            )
    return capacity, list(view.allocations())


preemptor_requests = st.builds(
    PartitionRequest,
    memory_bytes=st.sampled_from((20, 22, 40, 46, 60, 90, 94, 100, 150)).map(lambda g: g * GI),
    partitions=st.sampled_from((1, 1, 2, 4)),
    sharing=st.sampled_from(Sharing),
)


@settings(max_examples=300, deadline=None)
@given(crowded=crowded_nodes(), req=preemptor_requests, data=st.data())
def test_victims_are_the_smallest_set_by_brute_force(
    crowded: tuple[NodeCapacity, list[Allocation]], req: PartitionRequest, data: st.DataObject
) -> None:
    capacity, pods = crowded
    assume(brute_fits(capacity, {}, req))  # eviction can help only if an empty node fits it
    everyone = data.draw(st.booleans())
    some = st.lists(st.sampled_from(pods), unique=True) if pods else st.just([])
    candidates = pods if everyone else data.draw(some)
    got = victims_for(req, capacity, pods, candidates)

    def fits_without(victims: Iterable[Allocation]) -> bool:
        gone = {v.pod_uid for v in victims}
        return brute_fits(capacity, brute_usage(p for p in pods if p.pod_uid not in gone), req)

    best = None
    for size in range(len(candidates) + 1):
        sets = [c for c in combinations(candidates, size) if fits_without(c)]
        if sets:
            best = min(sum(v.total_bytes for v in c) for c in sets), size
            break
    event(f"victims: {'none possible' if best is None else best[1]}")
    if best is None:
        assert got is None
        return
    assert got is not None
    assert fits_without(got)
    assert {v.pod_uid for v in got} <= {c.pod_uid for c in candidates}
    assert (sum(v.total_bytes for v in got), len(got)) == best


def test_answers_are_kept_for_the_most_recently_asked_shapes() -> None:
    """Past the cache's size the least recently asked shape goes, not every shape: a cluster
    with one more shape than that must not judge every node again on every call."""
    view = ClusterView([node("n", SPX)])
    shapes = [request(1 + i) for i in range(_CACHE_SHAPES + 1)]
    for shape in shapes[:_CACHE_SHAPES]:
        view.filter(shape)
    view.filter(shapes[0])  # asked again: now the most recent
    view.filter(shapes[-1])  # one shape too many: shapes[1] goes
    kept = view._fit_answers
    assert len(kept) == _CACHE_SHAPES
    assert _key(shapes[0], None) in kept
    assert _key(shapes[1], None) not in kept
