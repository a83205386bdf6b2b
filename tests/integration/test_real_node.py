"""A real kubelet and container runtime beside the kwok nodes (hack/devcluster/realnode.py):
the node registers and turns Ready, pods run in real containers, `kubectl logs` and `kubectl
exec` reach them through the apiserver, and mipart's daemon registers its device plugin with
the kubelet, whose pods then get their own partition through CDI, resolved by containerd.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster import images, kube, readiness
from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.node import Node
from hack.devcluster.procs import StartupError, wait_until
from hack.devcluster.realnode import TAINT, RealNode
from mipart.contract.annotations import ALLOCATION
from mipart.contract.resources import PARTITION_RESOURCE
from tests.support.real_node import (
    TIMEOUT,
    allocatable,
    device_nodes,
    exec_in,
    pod,
    running,
    what_it_sees,
)

pytestmark = pytest.mark.integration

GIB = 2**30
MEMORY_LIMIT = 96 * GIB


def pinned(name: str) -> str:
    for line in (REPO_ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise KeyError(name)


def test_the_real_kubelet_registers_its_node_ready(api: Any, real_node: RealNode) -> None:
    node = kube.core(api).read_node(real_node.name)

    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready[0].status == "True"
    assert node.status.node_info.kubelet_version == pinned("K8S_VERSION")
    containerd = pinned("CONTAINERD_VERSION").removeprefix("v")
    assert node.status.node_info.container_runtime_version == f"containerd://{containerd}"
    # Registered with it (the node lifecycle controller may still hold its not-ready taint).
    taints = {(t.key, t.value, t.effect) for t in node.spec.taints}
    assert (TAINT["key"], TAINT["value"], TAINT["effect"]) in taints


def test_a_pod_of_the_pause_image_runs(api: Any, real_node: RealNode, namespace: str) -> None:
    kube.core(api).create_namespaced_pod(
        namespace, pod("pause", real_node.name, real_node.pause_image)
    )

    started = running(api, namespace, "pause")

    assert started.status.container_statuses[0].ready
    assert started.status.container_statuses[0].image == real_node.pause_image


def test_kubectl_logs_and_exec_reach_the_container(
    api: Any, control_plane: ControlPlane, real_node: RealNode, namespace: str
) -> None:
    command = ["sh", "-c", "echo hello from the real node; exec sleep 3600"]
    body = pod("shell", real_node.name, images.BUSYBOX_IMAGE, command)
    kube.core(api).create_namespaced_pod(namespace, body)
    running(api, namespace, "shell")

    def logged() -> bool:
        logs = control_plane.kubectl("logs", "-n", namespace, "shell", check=False)
        return logs.stdout == "hello from the real node\n"

    wait_until("the container's output in kubectl logs", logged, TIMEOUT)
    # exec runs beside the container's own process, in its namespaces.
    assert (
        exec_in(control_plane, namespace, "shell", "cat", "/proc/1/cmdline") == "sleep\x003600\x00"
    )
    # A hostNetwork pod has the host's UTS namespace too: the node's name is the host name.
    assert exec_in(control_plane, namespace, "shell", "hostname").strip().lower() == real_node.name


# --- mipart's daemon as the node's device plugin -------------------------------------------


@pytest.fixture
def plugged_node(
    control_plane: ControlPlane, real_node: RealNode, api: Any, emulator_build: Path, tmp_path: Path
) -> Iterator[Node]:
    """mipart's daemon over 8 emulated MI300X (SPX) on the real node, as its own service
    account, serving its device plugin in the kubelet's device-plugin directory and writing its
    CDI specs where the node's containerd reads them."""
    token = control_plane.service_account_kubeconfig("mipart-system", "mipart-daemon")
    node = Node(emulator_build, tmp_path)
    node.extra_args = [
        "--device-plugin-dir", str(real_node.device_plugin_dir),
        "--pod-resources-socket", str(real_node.pod_resources_socket),
        "--cdi-dir", str(real_node.cdi_dir),
        "--launcher-dir", str(tmp_path / "launcher"),
        "--kubeconfig", str(token),
        "--node-name", real_node.name,
        "--heartbeat", "60",
    ]  # fmt: skip
    node.start()
    try:
        minors = [p["render_minor"] for g in node.show()["gpus"] for p in g["partitions"]]
        paths = [Path("/dev/kfd")] + [Path(f"/dev/dri/renderD{m}") for m in minors]
        with device_nodes(paths):
            yield node
    finally:
        node.stop()
        with contextlib.suppress(Exception):
            kube.custom_objects(api).delete_cluster_custom_object(*kube.GPUNODES, real_node.name)


def partition_pod(node: str, partition: str) -> dict[str, Any]:
    """A pod as the extender leaves one: bound, with its allocation (one partition) on it,
    asking the kubelet for one slot of the device plugin's resource."""
    allocation = {"v": 1, "node": node, "partitions": [partition],
                  "memoryBytes": MEMORY_LIMIT, "sharing": "shared"}  # fmt: skip
    return pod(
        f"on-{partition}",
        node,
        images.BUSYBOX_IMAGE,
        ["sleep", "3600"],
        partitions=1,
        annotations={ALLOCATION: json.dumps(allocation)},
    )


def test_each_pod_gets_its_own_partition_from_the_real_kubelet(
    api: Any,
    control_plane: ControlPlane,
    real_node: RealNode,
    plugged_node: Node,
    namespace: str,
) -> None:
    # The plugin advertises slots, max(64, 8 per partition) (docs/device-plugin.md); the
    # kubelet puts them in the Node's allocatable at its next status update.
    wait_until(
        f"{PARTITION_RESOURCE} in the node's allocatable",
        lambda: allocatable(api, real_node.name) == "64",
        TIMEOUT,
    )
    gpus = plugged_node.show()["gpus"]
    render = {p["id"]: p["render_minor"] for g in gpus for p in g["partitions"]}
    partitions = ["gpu0-spx-0", "gpu5-spx-0"]
    for partition in partitions:
        kube.core(api).create_namespaced_pod(namespace, partition_pod(real_node.name, partition))
    for partition in partitions:
        running(api, namespace, f"on-{partition}")

    seen = {p: what_it_sees(control_plane, namespace, f"on-{p}") for p in partitions}

    # What the kubelet's Allocate and PreStartContainer left for containerd to resolve from
    # the daemon's CDI spec: the pod's own partition, its render node alone, /dev/kfd, and the
    # daemon's start-up socket mounted in.
    assert seen == {
        p: {
            "partitions": p,
            "hip": "0",
            "memory limit": str(MEMORY_LIMIT),
            "render nodes": [f"renderD{render[p]}"],
            "kfd": "character special file",
            "startup socket dir": ["startup.sock"],
        }
        for p in partitions
    }


def test_a_second_real_node_is_refused_while_one_runs(
    api: Any, control_plane: ControlPlane, real_node: RealNode, tmp_path: Path
) -> None:
    with pytest.raises(StartupError, match="another real node runs on this machine"):
        RealNode(control_plane, tmp_path / "second").start()

    # ... and the refusal touched nothing of the running one.
    assert readiness.nodes_ready(api, [real_node.name])
    assert real_node.ctr("version", check=False).returncode == 0
