"""Annotated pods placed on partitions by the real kube-scheduler calling mipart's extender,
with daemons over emulated MI300X publishing GPUNodes and the admission webhook in front,
each component under its own service account and the RBAC from manifests/."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import defaultdict
from typing import Any

import pytest

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack
from mipart.placement import instance_footprint

pytestmark = pytest.mark.integration
GI = 2**30

LAYOUTS: list[dict[int, str]] = [
    {},  # 8 x SPX
    dict.fromkeys(range(8), "CPX"),
    {**dict.fromkeys(range(4), "CPX")},  # 4 x CPX, 4 x SPX
    {**dict.fromkeys(range(4), "QPX"), **dict.fromkeys(range(4, 8), "DPX")},
]


def make_pod(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
    }


def pods(api: Any, namespace: str) -> list[dict[str, Any]]:
    listing = kube.core(api).list_namespaced_pod(namespace, _preload_content=False)
    return list(json.loads(listing.data)["items"])


def all_mipart_pods(api: Any) -> list[dict[str, Any]]:
    listing = kube.core(api).list_pod_for_all_namespaces(
        field_selector="spec.schedulerName=mipart-scheduler", _preload_content=False
    )
    return list(json.loads(listing.data)["items"])


def check_no_overcommit(api: Any, placed: list[dict[str, Any]]) -> None:
    """No partition's allocations exceed its memory; an exclusive one holds one
    (docs/placement.md#rules)."""
    objects = kube.custom_objects(api)
    capacity: dict[tuple[str, str], int] = {}
    for item in objects.list_cluster_custom_object(*kube.GPUNODES)["items"]:
        for gpu in item.get("status", {}).get("gpus", []):
            for part in gpu["partitions"]:
                capacity[(item["metadata"]["name"], part["id"])] = part["memoryBytes"]
    used: dict[tuple[str, str], int] = defaultdict(int)
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pod in placed:
        allocation = json.loads(pod["metadata"]["annotations"]["mipart.io/allocation"])
        assert allocation["node"] == pod["spec"]["nodeName"]
        for pid in allocation["partitions"]:
            key = (allocation["node"], pid)
            # Every instance, exclusive or shared, holds its limit and the reserve beside it.
            used[key] += instance_footprint(allocation["memoryBytes"])
            holders[key].append(allocation["sharing"])
    for key, total in used.items():
        assert total <= capacity[key], f"{key} over-committed: {total} > {capacity[key]}"
        if "exclusive" in holders[key]:
            assert holders[key] == ["exclusive"], f"{key} exclusive but shared: {holders[key]}"


def test_forty_pods_on_mixed_layouts(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    for name, layout in zip(control_plane.node_names, LAYOUTS, strict=False):
        stack.start_daemon(name, layout)
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()

    # 12 SPX partitions in all (node 0: 8, node 2: 4); the smaller pods fit tighter
    # partitions elsewhere, so the 150Gi and 190Gi pods take all 12 and three 150Gi wait.
    wanted: list[tuple[str, dict[str, str]]] = (
        [("8Gi", {})] * 12
        + [("8Gi", {"mipart.io/partition-mode": "QPX"})] * 2
        + [("20Gi", {})] * 4
        + [("40Gi", {})] * 4
        + [("90Gi", {})] * 3
        + [("190Gi", {"mipart.io/sharing": "exclusive"})] * 3
        + [("150Gi", {})] * 12
    )
    assert len(wanted) == 40
    core = kube.core(api)
    for i, (memory, extra) in enumerate(wanted):
        core.create_namespaced_pod(
            namespace, make_pod(f"p{i:02d}-{memory.lower()}", {"mipart.io/memory": memory, **extra})
        )

    def bound() -> list[dict[str, Any]]:
        return [p for p in pods(api, namespace) if p["spec"].get("nodeName")]

    wait_until("37 pods bound", lambda: len(bound()) == 37, timeout=180)
    time.sleep(2)  # and no more
    placed = bound()
    assert len(placed) == 37
    check_no_overcommit(api, placed)
    for pod in placed:
        assert pod["spec"]["schedulerName"] == "mipart-scheduler"  # set by the webhook
        mode = pod["metadata"]["annotations"].get("mipart.io/partition-mode")
        if mode:
            allocation = json.loads(pod["metadata"]["annotations"]["mipart.io/allocation"])
            assert all(f"-{mode.lower()}-" in p for p in allocation["partitions"]), allocation
    pending = [p["metadata"]["name"] for p in pods(api, namespace) if not p["spec"].get("nodeName")]
    assert len(pending) == 3
    assert all(name.endswith("-150gi") for name in pending)

    def event_for(pod: str) -> str:
        listing = kube.events(api).list_namespaced_event(
            namespace, field_selector=f"regarding.name={pod},reason=NoPartitionFits"
        )
        return " | ".join(e.note or "" for e in listing.items)

    wait_until("an event on a waiting pod", lambda: bool(event_for(pending[0])), timeout=60)
    why = event_for(pending[0])
    # One line per group of nodes in the same situation.
    assert "1 node: CPX only: 23.9Gi partitions" in why
    assert "no partition with 150Gi free" in why
    assert "4 nodes: no GPU inventory for this node" in why


def test_impossible_requests_are_refused_at_admission(
    stack: Stack, api: Any, namespace: str
) -> None:
    stack.start_webhook(api)
    core = kube.core(api)
    for wanted, expected in (
        (
            {"mipart.io/memory": "24Gi", "mipart.io/partition-mode": "CPX"},
            "more than any CPX partition holds",
        ),
        ({"mipart.io/memory": "lots"}, "mipart.io/memory: 'lots' is not valid"),
        (
            {"mipart.io/memroy": "8Gi", "mipart.io/model": "Llama-3.1-8B"},
            "mipart.io/memroy: unknown annotation",
        ),
    ):
        with pytest.raises(Exception, match=expected):
            core.create_namespaced_pod(namespace, make_pod("refused", wanted))
    assert not pods(api, namespace)


def test_two_hundred_pods_with_the_extender_killed_twice(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    nodes = control_plane.node_names[:8]
    for name in nodes:
        stack.start_daemon(name)  # 8 x SPX: three 60Gi pods per partition
    stack.wait_published(api)
    stack.start_webhook(api)
    extender = stack.start_extender()
    # Pods of earlier tests hold partitions until their namespaces are gone.
    wait_until(
        "no mipart pods from earlier tests",
        lambda: not [p for p in all_mipart_pods(api) if p["metadata"]["namespace"] != namespace],
        timeout=120,
    )
    fits = len(nodes) * 8 * 3
    core = kube.core(api)
    for i in range(200):
        core.create_namespaced_pod(namespace, make_pod(f"b{i:03d}", {"mipart.io/memory": "60Gi"}))

    def bound_count() -> int:
        return sum(1 for p in pods(api, namespace) if p["spec"].get("nodeName"))

    for kill_at in (fits // 4, fits // 2):

        def reached(k: int = kill_at) -> bool:
            return bound_count() >= k

        wait_until(f"{kill_at} pods bound", reached, timeout=240)
        os.kill(extender.pid, signal.SIGKILL)
        time.sleep(1)
        extender = stack.start_extender()
    wait_until(f"{min(fits, 200)} pods bound", lambda: bound_count() == min(fits, 200), timeout=300)
    time.sleep(3)  # nothing more may bind
    placed = [p for p in pods(api, namespace) if p["spec"].get("nodeName")]
    assert len(placed) == min(fits, 200)
    check_no_overcommit(api, placed)

    # The restarted extender sees exactly what the API holds.
    with urllib.request.urlopen(
        control_plane.extender.status_url("/debug/allocations"), timeout=10
    ) as reply:
        view = json.loads(reply.read())
    from_api = {
        p["metadata"]["uid"]: json.loads(p["metadata"]["annotations"]["mipart.io/allocation"])
        for p in placed
    }
    assert {uid: (a["node"], a["partitions"]) for uid, a in view.items()} == {
        uid: (a["node"], a["partitions"]) for uid, a in from_api.items()
    }
