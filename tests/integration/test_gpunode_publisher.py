"""The daemon mirrors its node to a GPUNode, as its own service account with the RBAC from
the chart's rbac-daemon.yaml, over the emulated MI300X."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.node import Node
from hack.devcluster.procs import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def published_node(
    control_plane: ControlPlane, emulator_build: Path, tmp_path: Path
) -> Iterator[tuple[Node, str]]:
    name = control_plane.node_names[0]
    token = control_plane.service_account_kubeconfig("mipart-system", "mipart-daemon")
    node = Node(emulator_build, tmp_path)
    node.extra_args = ["--kubeconfig", str(token), "--node-name", name, "--heartbeat", "1"]
    node.start()
    yield node, name
    node.stop()
    kube.custom_objects(control_plane.api_client()).delete_cluster_custom_object(
        *kube.GPUNODES, name
    )


def test_status_follows_the_hardware(
    published_node: tuple[Node, str], api: Any, control_plane: ControlPlane
) -> None:
    node, name = published_node

    def status() -> dict[str, Any]:
        try:
            return dict(kube.gpunode(api, name).get("status") or {})
        except Exception:
            return {}

    def ready() -> bool:
        conditions = status().get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # The first status may be published while the daemon still checks for an interrupted
    # change (Ready False, reason Recovering); Ready follows within a poll or two.
    wait_until("GPUNode Ready", ready, timeout=60)
    first = status()
    assert first["gpuCount"] == 8
    assert first["memoryPartition"] == "NPS1"
    assert first["partitionCount"] == 8
    assert {g["computePartition"] for g in first["gpus"]} == {"SPX"}
    assert first["gpus"][0]["partitions"][0]["id"] == "gpu0-spx-0"
    owner = kube.gpunode(api, name)["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Node", name)

    node.smi_ok("set", "compute", "CPX", "--gpu", "0")
    wait_until("15 partitions published", lambda: status().get("partitionCount") == 15, timeout=30)
    gpu0 = status()["gpus"][0]
    assert [p["memoryBytes"] for p in gpu0["partitions"]] == [24574 * 2**20] * 8
    assert gpu0["partitions"][5]["memoryPool"] == 0  # NPS1: one pool

    table = control_plane.kubectl("get", "gpunodes", name).stdout
    assert "NPS1" in table
    assert " 15 " in table


def test_free_memory_counts_the_allocations_of_pods_on_the_node(
    published_node: tuple[Node, str], api: Any, namespace: str
) -> None:
    _, name = published_node
    wait_until(
        "GPUNode status",
        lambda: (kube.gpunode(api, name).get("status") or {}).get("gpuCount") == 8,
        timeout=60,
    )
    before = kube.gpunode(api, name)["status"]["freeMemory"]
    pod = kube.bound_pod("holder", name, ["gpu1-spx-0"], 40 * 2**30)
    kube.core(api).create_namespaced_pod(namespace, pod)
    # 8 x 196592 MiB = 1535.875 GiB, shown rounded down.
    assert before == "1535Gi"
    wait_until(
        "free memory to drop by 40Gi",
        lambda: kube.gpunode(api, name)["status"]["freeMemory"] == "1495Gi",
        timeout=30,
    )
