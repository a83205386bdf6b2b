"""The pods on each partition, from the daemon's conversion to mipart-smi's table, JSON and
CSV, with a fake pods provider in place of the daemon's pod cache (no Kubernetes needed)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any, cast

from mipart.agent.partitions.manager import NodeStatus, PartitionManager
from mipart.agent.server.convert import PodsOnNode, node_message
from mipart.agent.server.service import NodeService
from mipart.api.v1 import node_pb2 as pb
from mipart.geometry import ComputeMode, GpuProcess, NodeInventory
from mipart.placement import Allocation, Sharing
from mipart.smi.render import NODE_CSV, node_csv_rows, render_node, to_dict
from tests.support.inventories import gpu, node

GIB = 2**30
CHAT_A = Allocation("ml/chat-a", "uid-a", "n1", ("gpu0-cpx-1",), 10 * GIB, Sharing.SHARED)
CHAT_B = Allocation("ml/chat-b", "uid-b", "n1", ("gpu0-cpx-1",), 12 * GIB, Sharing.SHARED)
BIG = Allocation(
    "ml/big", "uid-big", "n1", ("gpu0-cpx-2", "gpu0-cpx-3"), 24 * GIB, Sharing.EXCLUSIVE
)


def inventory() -> NodeInventory:
    """GPU 0 in CPX with a process of chat-a on gpu0-cpx-1; GPU 1 in SPX."""
    vllm = GpuProcess(4242, "vllm", 9 * GIB, "gpu0-cpx-1")
    return node(gpu(0, ComputeMode.CPX, vllm), gpu(1, ComputeMode.SPX))


def with_usage() -> PodsOnNode:
    return PodsOnNode((CHAT_A, CHAT_B, BIG), {("uid-a", "gpu0-cpx-1"): 9 * GIB})


def message(pods: PodsOnNode) -> pb.Node:
    return node_message(NodeStatus(version=1, inventory=inventory()), "n1", pods)


def partition(node: pb.Node, pid: str) -> dict[str, Any]:
    for g in to_dict(node)["gpus"]:
        for p in g["partitions"]:
            if p["id"] == pid:
                return dict(p)
    raise AssertionError(pid)


def test_each_partition_lists_the_pods_holding_it() -> None:
    node = message(with_usage())
    shared = partition(node, "gpu0-cpx-1")["allocations"]
    assert shared == [
        {
            "pod": "ml/chat-a",
            "pod_uid": "uid-a",
            "memory_limit_bytes": 10 * GIB,
            "sharing": "shared",
            "memory_used_bytes": 9 * GIB,
        },
        {
            "pod": "ml/chat-b",
            "pod_uid": "uid-b",
            "memory_limit_bytes": 12 * GIB,
            "sharing": "shared",
            "memory_used_bytes": 0,  # usage known, no process of its own there
        },
    ]
    for pid in ("gpu0-cpx-2", "gpu0-cpx-3"):
        (entry,) = partition(node, pid)["allocations"]
        assert (entry["pod"], entry["sharing"], entry["memory_limit_bytes"]) == (
            "ml/big",
            "exclusive",
            24 * GIB,
        )
    assert partition(node, "gpu0-cpx-0")["allocations"] == []
    assert partition(node, "gpu1-spx-0")["allocations"] == []


def test_usage_is_left_out_when_processes_cannot_be_mapped_to_pods() -> None:
    node = message(PodsOnNode((CHAT_A,), None))
    (entry,) = partition(node, "gpu0-cpx-1")["allocations"]
    assert "memory_used_bytes" not in entry
    assert entry["memory_limit_bytes"] == 10 * GIB
    (row,) = [r for r in render_node(node).splitlines() if "ml/chat-a" in r]
    assert row.split()[-2:] == ["GiB", "N/A"]


def test_the_table_has_one_line_per_pod_and_dashes_where_none() -> None:
    lines = render_node(message(with_usage())).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("GPU  PARTITION"))
    assert re.split(r"\s{2,}", lines[header]) == [
        "GPU",
        "PARTITION",
        "MODE",
        "MEMORY USED/TOTAL",
        "POD",
        "LIMIT",
        "POD USES",
    ]
    rows = [line.split() for line in lines[header + 1 :] if line.strip()][:11]
    by_id: dict[str, list[list[str]]] = {}
    for r in rows:
        by_id.setdefault(r[1], []).append(r)
    assert by_id["gpu0-cpx-0"] == [["0", "gpu0-cpx-0", "CPX", "0.0/24.0", "GiB", "-", "-", "-"]]
    assert by_id["gpu0-cpx-1"] == [
        ["0", "gpu0-cpx-1", "CPX", "9.0/24.0", "GiB", "ml/chat-a", "10.0", "GiB", "9.0", "GiB"],
        ["0", "gpu0-cpx-1", "CPX", "9.0/24.0", "GiB", "ml/chat-b", "12.0", "GiB", "0.0", "GiB"],
    ]
    assert [r[5] for r in by_id["gpu0-cpx-2"] + by_id["gpu0-cpx-3"]] == ["ml/big", "ml/big"]
    assert by_id["gpu1-spx-0"][0][5:] == ["-", "-", "-"]
    # The processes table still names the process.
    assert any(line.split()[:4] == ["0", "gpu0-cpx-1", "4242", "vllm"] for line in lines)


def test_csv_has_one_row_per_partition_and_pod() -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [NODE_CSV, *node_csv_rows(message(with_usage()))]
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 8 + 1 + 1  # 8 CPX partitions, one of them twice, and the SPX one
    shared = [r for r in rows if r["partition"] == "gpu0-cpx-1"]
    assert [(r["pod"], r["pod_uid"], r["sharing"]) for r in shared] == [
        ("ml/chat-a", "uid-a", "shared"),
        ("ml/chat-b", "uid-b", "shared"),
    ]
    assert shared[0]["memory_limit_bytes"] == str(10 * GIB)
    assert shared[0]["pod_memory_used_bytes"] == str(9 * GIB)
    assert shared[0]["memory_used_bytes"] == str(9 * GIB)
    free = next(r for r in rows if r["partition"] == "gpu0-cpx-0")
    assert [free[k] for k in NODE_CSV[5:]] == ["", "", "", "", ""]
    unknown = node_csv_rows(message(PodsOnNode((CHAT_A,), None)))
    assert next(r for r in unknown if r[1] == "gpu0-cpx-1")[-1] == ""


class FakeManager:
    def refresh(self) -> NodeStatus:
        return NodeStatus(version=1, inventory=inventory())


def get_node(service: NodeService) -> pb.Node:
    return service.GetNode(pb.GetNodeRequest(), cast(Any, None))


def test_the_service_asks_its_provider_and_shows_no_pods_without_one() -> None:
    seen: list[NodeInventory] = []

    def provider(inv: NodeInventory) -> PodsOnNode:
        seen.append(inv)
        return with_usage()

    service = NodeService(cast(PartitionManager, FakeManager()), "n1")
    assert partition(get_node(service), "gpu0-cpx-1")["allocations"] == []
    service.set_pods_provider(provider)
    shown = partition(get_node(service), "gpu0-cpx-1")["allocations"]
    assert [a["pod"] for a in shown] == ["ml/chat-a", "ml/chat-b"]
    assert len(seen) == 1
    assert len(seen[0].gpus) == 2


def test_a_failing_provider_costs_the_pods_not_the_call() -> None:
    def broken(_: NodeInventory) -> PodsOnNode:
        raise RuntimeError("pod cache exploded")

    service = NodeService(cast(PartitionManager, FakeManager()), "n1", broken)
    node = get_node(service)
    assert len(node.gpus) == 2
    assert all(not p.allocations for g in node.gpus for p in g.partitions)
