"""Each container gets exactly its pod's partitions: 16 pods with allocations on one node,
admitted concurrently in a shuffled order by the kubelet peer, 20 times over.

The daemon runs as its own service account against the real control plane and reads the
allocations from real pods (spec.nodeName + mipart.io/allocation, as the extender writes
them); the kubelet peer plays the kubelet over real unix sockets.
"""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hack.devcluster import kube
from hack.devcluster.node import Node
from tests.support.kubelet_peer import KubeletPeer, Pod

pytestmark = pytest.mark.integration

REPETITIONS = 20
GIB = 2**30


def layout(node: Node) -> dict[str, int]:
    """Partition id -> render minor, as the daemon reports them."""
    return {p["id"]: p["render_minor"] for g in node.show()["gpus"] for p in g["partitions"]}


def plans(node_name: str) -> list[dict[str, Any]]:
    """16 pods: 14 on one CPX partition each, 2 on two SPX GPUs each (one of them with two
    containers), every one with its own memory limit."""
    single = [[f"gpu{g}-cpx-{i}"] for g in (0, 1) for i in range(8)][:14]
    double = [["gpu2-spx-0", "gpu3-spx-0"], ["gpu4-spx-0", "gpu5-spx-0"]]
    out = []
    for n, partitions in enumerate(single + double):
        allocation = {
            "v": 1,
            "node": node_name,
            "partitions": partitions,
            "memoryBytes": (n + 1) * GIB,
            "sharing": "shared",
        }
        containers = {"main": 1, "sidecar": 1} if n == 15 else {"main": 1}
        out.append({"allocation": allocation, "containers": containers})
    return out


def create_pod(api: Any, namespace: str, name: str, node_name: str, plan: dict[str, Any]) -> str:
    allocation = plan["allocation"]
    body = kube.bound_pod(name, node_name, allocation["partitions"], allocation["memoryBytes"],
                          containers=tuple(plan["containers"]))  # fmt: skip
    pod = kube.core(api).create_namespaced_pod(namespace, body)
    return str(pod.metadata.uid)


def mismatches(pod: Pod, plan: dict[str, Any], render: dict[str, int]) -> list[str]:
    allocation = plan["allocation"]
    want_nodes = ["/dev/kfd"] + [f"/dev/dri/renderD{render[p]}" for p in allocation["partitions"]]
    wrong = []
    for container in pod.containers.values():
        got = (container.device_nodes, container.env.get("MIPART_PARTITIONS"))
        want = (want_nodes, ",".join(allocation["partitions"]))
        limit = container.env.get("MIPART_MEMORY_LIMIT_BYTES")
        if got != want or limit != str(allocation["memoryBytes"]):
            wrong.append(f"{pod.name}/{container.name}: got {got} {limit}, want {want}")
    return wrong


def test_new_partitions_bring_their_slots_without_a_restart(
    plugged: tuple[Node, KubeletPeer, str],
) -> None:
    node, peer, _ = plugged
    assert len(peer.wait_devices(64)) == 64  # 8 SPX partitions, 8 slots each
    node.smi_ok("set", "compute", "CPX", "--gpu", "0")
    # 15 partitions now (8 CPX + 7 SPX): their slots arrive on the same ListAndWatch stream,
    # with no new registration and nothing restarted.
    assert len(peer.wait_devices(15 * 8)) == 120
    assert peer.endpoints == ["mipart.sock"]


def test_every_container_gets_its_own_pods_partitions(
    plugged: tuple[Node, KubeletPeer, str], api: Any, namespace: str
) -> None:
    node, peer, node_name = plugged
    node.smi_ok("set", "compute", "CPX", "--gpu", "0,1")
    render = layout(node)
    assert "gpu1-cpx-7" in render
    # 8 CPX + 8 CPX + 6 SPX partitions: 22 x 8 = 176 slots.
    assert len(peer.wait_devices(176)) == 176
    pods = plans(node_name)
    wrong: list[str] = []
    for rep in range(REPETITIONS):
        names = [f"r{rep}-p{n}-{uuid.uuid4().hex[:4]}" for n in range(len(pods))]
        uids = [create_pod(api, namespace, names[n], node_name, p) for n, p in enumerate(pods)]
        order = list(range(len(pods)))
        random.shuffle(order)

        def admit(n: int) -> Pod:
            return peer.admit(namespace, names[n], uids[n], pods[n]["containers"])  # noqa: B023

        with ThreadPoolExecutor(max_workers=len(pods)) as pool:
            admitted = dict(zip(order, pool.map(admit, order), strict=True))
        for n, pod in admitted.items():
            wrong += [f"rep {rep}: {m}" for m in mismatches(pod, pods[n], render)]
        for name in names:
            peer.remove(namespace, name)
    assert wrong == [], "\n".join(wrong[:20])
