"""The packing benchmark's optimum that keeps running pods where they are: it must count only
the room a scheduler that moves nothing could use, class by class."""

from __future__ import annotations

from hack.bench.packing_ilp import bound_keeping
from mipart.geometry import ComputeMode, MemoryMode, NodeLayout
from mipart.geometry._partitions import partition_id
from mipart.placement import Allocation, PartitionRequest, QosClass, Sharing

GI = 2**30
SPX, QPX, CPX = ComputeMode.SPX, ComputeMode.QPX, ComputeMode.CPX
EXCLUSIVE = Sharing.EXCLUSIVE


def kept(node: str, gpu: int, mode: ComputeMode, index: int = 0) -> Allocation:
    pod = f"{node}-{gpu}-{index}"
    return Allocation(pod, pod, node, (partition_id(gpu, mode, index),), 10 * GI, EXCLUSIVE)


def test_a_busy_gpu_keeps_its_mode_and_idle_ones_take_any_on_nps1() -> None:
    big = PartitionRequest(100 * GI, sharing=EXCLUSIVE)  # an SPX partition only
    layouts = {"a": NodeLayout(MemoryMode.NPS1, dict.fromkeys(range(8), CPX))}
    added = bound_keeping([big] * 10, [kept("a", 0, CPX)], layouts, time_limit=10)
    assert added[QosClass.STANDARD] == 7 * 100 * GI


def test_a_partly_used_nps4_node_offers_no_spx_but_a_wholly_idle_one_does() -> None:
    big = PartitionRequest(100 * GI, sharing=EXCLUSIVE)
    small = PartitionRequest(40 * GI, sharing=EXCLUSIVE)  # a QPX partition
    nps4 = NodeLayout(MemoryMode.NPS4, dict.fromkeys(range(8), QPX))
    used = bound_keeping([big] * 10 + [small] * 3, [kept("a", 0, QPX)], {"a": nps4}, time_limit=10)
    assert used[QosClass.STANDARD] == 3 * 40 * GI  # on the busy GPU's free partitions, or idle QPX
    idle = bound_keeping([big] * 10, [], {"a": nps4}, time_limit=10)
    assert idle[QosClass.STANDARD] == 8 * 100 * GI  # a reload into NPS1


def test_classes_are_served_in_order_not_by_memory() -> None:
    batch = PartitionRequest(150 * GI, sharing=EXCLUSIVE, qos=QosClass.BATCH)
    latency = PartitionRequest(40 * GI, sharing=EXCLUSIVE, qos=QosClass.LATENCY)
    layouts = {"a": NodeLayout(MemoryMode.NPS1, dict.fromkeys(range(2), SPX))}
    added = bound_keeping([batch] * 2 + [latency] * 8, [], layouts, time_limit=10)
    # Eight latency replicas fit QPX partitions of both GPUs; the batch ones get nothing.
    assert added == {QosClass.LATENCY: 8 * 40 * GI, QosClass.STANDARD: 0, QosClass.BATCH: 0}


def test_with_aging_an_older_aged_pod_of_the_same_size_goes_first() -> None:
    old = PartitionRequest(100 * GI, sharing=EXCLUSIVE)  # aged, the first in the queue
    young = PartitionRequest(150 * GI, sharing=EXCLUSIVE)  # same size (SPX), more memory
    other = PartitionRequest(40 * GI, sharing=EXCLUSIVE, qos=QosClass.BATCH)
    layouts = {"a": NodeLayout(MemoryMode.NPS1, {0: SPX})}
    waiting = [old, young]
    assert bound_keeping(waiting, [], layouts, time_limit=10)[QosClass.STANDARD] == 150 * GI
    fair = bound_keeping(waiting, [], layouts, time_limit=10, aged=[True, False])
    assert fair[QosClass.STANDARD] == 100 * GI
    # Another class is another group: an aged batch pod does not hold the young one back.
    mixed = bound_keeping([other, young], [], layouts, time_limit=10, aged=[True, False])
    assert mixed[QosClass.STANDARD] == 150 * GI
