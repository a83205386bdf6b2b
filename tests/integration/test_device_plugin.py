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
from pathlib import Path
from typing import Any

import grpc
import pytest

from hack.devcluster import kube
from hack.devcluster.node import Node
from hack.devcluster.procs import wait_until
from mipart.agent.deviceplugin.launchers import key_of
from mipart.api.v1 import node_pb2, node_pb2_grpc
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


def launcher_dir(peer: KubeletPeer, pod: Pod) -> Path:
    """Where the daemon (--launcher-dir, next to the peer's directories) serves the pod's
    start-up lock socket."""
    return peer.plugin_dir.parent / "launcher" / key_of(pod.namespace, pod.name)


def mismatches(
    pod: Pod, plan: dict[str, Any], render: dict[str, int], peer: KubeletPeer
) -> list[str]:
    allocation = plan["allocation"]
    want_nodes = ["/dev/kfd"] + [f"/dev/dri/renderD{render[p]}" for p in allocation["partitions"]]
    # Its own pod's start-up lock socket, and no other, mounted where the launcher looks.
    want_mounts = {"/run/mipart/launcher": str(launcher_dir(peer, pod))}
    wrong = []
    for container in pod.containers.values():
        got = (container.device_nodes, container.env.get("MIPART_PARTITIONS"), container.mounts)
        want = (want_nodes, ",".join(allocation["partitions"]), want_mounts)
        limit = container.env.get("MIPART_MEMORY_LIMIT_BYTES")
        socket = container.env.get("MIPART_STARTUP_SOCKET")
        if got != want or limit != str(allocation["memoryBytes"]):
            wrong.append(f"{pod.name}/{container.name}: got {got} {limit}, want {want}")
        if socket != "/run/mipart/launcher/startup.sock":
            wrong.append(f"{pod.name}/{container.name}: MIPART_STARTUP_SOCKET {socket}")
        if not (launcher_dir(peer, pod) / "startup.sock").is_socket():
            wrong.append(f"{pod.name}: no start-up lock socket in {launcher_dir(peer, pod)}")
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
            wrong += [f"rep {rep}: {m}" for m in mismatches(pod, pods[n], render, peer)]
        for name in names:
            peer.remove(namespace, name)
    assert wrong == [], "\n".join(wrong[:20])


def hold(socket: Path, pools: list[str], holder: str) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(f"unix://{socket}")
    request = node_pb2.HoldStartupLockRequest(memory_pools=pools, holder=holder, hold_seconds=60)
    return channel, node_pb2_grpc.StartupServiceStub(channel).HoldStartupLock(request, timeout=60)


def test_each_pod_takes_the_start_up_lock_as_itself_and_keeps_its_socket_over_a_restart(
    plugged: tuple[Node, KubeletPeer, str], api: Any, namespace: str
) -> None:
    """Two pods on CPX partitions of one GPU (one memory pool). The lock is queued under the
    pod whose socket the call came in on, whatever name the call gives; a pod's socket takes
    only its own pools; a restarted daemon serves each running pod's socket again in the
    directory its container has mounted; a pod gone takes its socket with it."""
    node, peer, node_name = plugged
    node.smi_ok("set", "compute", "CPX", "--gpu", "0")
    peer.wait_devices(15 * 8)
    admitted = {}
    for name, partition in (("tenant-a", "gpu0-cpx-0"), ("tenant-b", "gpu0-cpx-1")):
        body = kube.bound_pod(name, node_name, [partition], 8 * GIB)
        uid = kube.core(api).create_namespaced_pod(namespace, body).metadata.uid
        admitted[name] = peer.admit(namespace, name, uid, {"c": 1})
    sockets = {name: launcher_dir(peer, pod) / "startup.sock" for name, pod in admitted.items()}

    a_channel, a_call = hold(sockets["tenant-a"], ["gpu0-pool0"], f"{namespace}/tenant-b")
    b_channel = None
    try:
        assert next(a_call).state == "Granted"  # before b asks: the calls start at once
        b_channel, b_call = hold(sockets["tenant-b"], ["gpu0-pool0"], "tenant-b")
        queued = next(b_call)
        assert (queued.state, list(queued.holders)) == ("Queued", [f"{namespace}/tenant-a"])
        with pytest.raises(grpc.RpcError) as other_pool:
            next(hold(sockets["tenant-b"], ["gpu1-pool0"], "tenant-b")[1])
        assert other_pool.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        a_channel.close()
        if b_channel is not None:
            b_channel.close()

    node.kill()
    node.start()

    def served_again() -> bool:
        channel, call = hold(sockets["tenant-a"], ["gpu0-pool0"], "tenant-a")
        with channel:
            try:
                return bool(next(call).state == "Granted")
            except grpc.RpcError:
                return False

    wait_until("the restarted daemon to serve tenant-a's socket", served_again, timeout=30)

    peer.remove(namespace, "tenant-a")
    node.kill()  # its next start tidies up at once
    node.start()
    wait_until(
        "tenant-a's socket directory to go",
        lambda: not sockets["tenant-a"].parent.exists() and sockets["tenant-b"].exists(),
        timeout=30,
    )
