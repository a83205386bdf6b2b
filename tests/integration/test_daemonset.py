"""The chart's DaemonSet on a real node: mipart's image, built by hack/build-image and imported
into the node's containerd, runs the daemon as the chart runs it (privileged, the kubelet's
directories and the CDI directory mounted, its own service account). Its device plugin registers
with the real kubelet; pods the extender binds start with their own partition's devices and
environment; and the daemon pod can go and come back under running pods without touching them.

The node has no pod network and no kube-proxy: the daemon gets the node's network and reaches
the API server at 127.0.0.1 (daemon.hostNetwork, daemon.env), and the GPU device nodes its CDI
specs name are stand-ins (the emulated MI300X has none).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster import chart, images, kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.kwok import GPU_PRODUCT_LABEL
from hack.devcluster.node import Node
from hack.devcluster.procs import free_ports, wait_until
from hack.devcluster.realnode import TAINT, RealNode
from hack.devcluster.stack import Stack
from mipart.contract.annotations import ALLOCATION, MEMORY, SHARING
from tests.support.kserve_services import Services
from tests.support.real_node import (
    TIMEOUT,
    allocatable,
    device_nodes,
    running,
    what_it_sees,
)

pytestmark = pytest.mark.integration

DAEMON_LABELS = "app.kubernetes.io/name=mipart-daemon"
# The slots the plugin advertises for 8 SPX partitions: max(64, 8 per partition).
SLOTS = "64"


@dataclass
class ChartDaemon:
    """The chart's daemon on the real node, and a mipart-smi client of it on the host."""

    smi: Node

    def pod(self, api: Any) -> Any:
        (pod,) = (
            kube.core(api).list_namespaced_pod(chart.NAMESPACE, label_selector=DAEMON_LABELS).items
        )
        return pod


def daemon_values(
    plane: ControlPlane, node: RealNode, image: str, host: Path, metrics: int
) -> dict[str, Any]:
    """The chart's values for this node: the imported image (never pulled), the node alone, the
    host directories of the real node, and a way to the API server without kube-proxy."""
    repository, tag = image.rsplit(":", 1)
    api = urllib.parse.urlsplit(plane.api_url)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "daemon": {
            # The chart's own selector (the MI300X label) and this node alone.
            "nodeSelector": {"kubernetes.io/hostname": node.name},
            "nodeFeatureRule": False,
            "hostNetwork": True,
            "env": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": api.hostname},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(api.port)},
            ],
            "rocmPath": "/opt/rocm-emulator",
            "kubeletDir": str(node.kubelet_root),
            "cdiDir": str(node.cdi_dir),
            "socketDir": str(host / "run"),
            "stateDir": str(host / "state"),
            "metrics": {"port": metrics},
        },
    }


@pytest.fixture(scope="module")
def mipart_image(real_node: RealNode) -> str:
    """The emulated mipart image, imported into the real node's containerd."""
    archive = real_node.state_dir / "images" / "mipart.tar"
    built = images.build_product_images(archive)
    real_node.import_image(archive)
    listed = real_node.ctr("images", "ls", "-q").stdout.split()
    assert built.emulated in listed, listed
    return built.emulated


@pytest.fixture
def chart_daemon(
    control_plane: ControlPlane,
    api: Any,
    real_node: RealNode,
    mipart_image: str,
    emulator_build: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartDaemon]:
    host = tmp_path_factory.mktemp("ds")
    (metrics,) = free_ports(1)
    values = daemon_values(control_plane, real_node, mipart_image, host, metrics)
    objects = [o for o in chart.render(values) if o["kind"] == "DaemonSet"]
    # The label the chart's nodeSelector wants, set as docs/install.md tells an admin to.
    control_plane.kubectl("label", "node", real_node.name, f"{GPU_PRODUCT_LABEL}=MI300X")
    control_plane.kubectl("apply", "-f", str(chart.write(objects, host / "daemonset.yaml")))
    daemon = ChartDaemon(smi=Node(emulator_build, host))
    try:
        wait_until("the daemon pod Ready", lambda: _ready(daemon, api), 180)
        yield daemon
    finally:
        control_plane.kubectl("delete", "-f", str(host / "daemonset.yaml"), "--wait", check=False)
        wait_until(
            "the daemon pod gone",
            lambda: (
                not kube.core(api)
                .list_namespaced_pod(chart.NAMESPACE, label_selector=DAEMON_LABELS)
                .items
            ),
            TIMEOUT,
        )
        # The GPUNode outlives its daemon (docs/install.md, uninstall); the next module's tests
        # count GPUNodes.
        with contextlib.suppress(Exception):
            kube.custom_objects(api).delete_cluster_custom_object(*kube.GPUNODES, real_node.name)


def _ready(daemon: ChartDaemon, api: Any) -> bool:
    pods = kube.core(api).list_namespaced_pod(chart.NAMESPACE, label_selector=DAEMON_LABELS).items
    return len(pods) == 1 and any(
        c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or []
    )


def mipart_pod(name: str, node: str) -> dict[str, Any]:
    """A mipart pod as a user writes one: a memory limit and exclusive use of a partition (so
    that two pods cannot share one); the webhook sends it to mipart's scheduler. It tolerates
    the real node's taint and selects that node, where the test's daemon runs."""
    return {
        "metadata": {"name": name, "annotations": {MEMORY: "96Gi", SHARING: "exclusive"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{**TAINT, "operator": "Equal"}],
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "c",
                    "image": images.BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }


def containers(api: Any, namespace: str, names: list[str]) -> dict[str, tuple[str, int, Any]]:
    """Each pod's container: its runtime id, restart count and start time."""
    out = {}
    for name in names:
        (status,) = kube.core(api).read_namespaced_pod(name, namespace).status.container_statuses
        out[name] = (status.container_id, status.restart_count, status.state.running.started_at)
    return out


def test_the_charts_daemonset_serves_partitions_on_a_real_node(
    api: Any,
    control_plane: ControlPlane,
    real_node: RealNode,
    chart_daemon: ChartDaemon,
    stack: Stack,
    namespace: str,
) -> None:
    # The device plugin, in the chart's pod, registered with the real kubelet.
    wait_until(
        "the partitions in the node's allocatable",
        lambda: allocatable(api, real_node.name) == SLOTS,
        TIMEOUT,
    )
    gpus = chart_daemon.smi.show()["gpus"]
    render = {p["id"]: p["render_minor"] for g in gpus for p in g["partitions"]}
    assert len(render) == 8
    wait_until(
        "the daemon's GPUNode",
        lambda: kube.gpunode(api, real_node.name).get("status", {}).get("partitionCount") == 8,
        TIMEOUT,
    )

    stack.start_webhook(api)
    stack.start_extender()
    names = ["first", "second"]
    paths = [Path("/dev/kfd")] + [Path(f"/dev/dri/renderD{m}") for m in render.values()]
    with device_nodes(paths):
        for name in names:
            kube.core(api).create_namespaced_pod(namespace, mipart_pod(name, real_node.name))
        bound = {name: running(api, namespace, name) for name in names}

        allocations = {
            name: json.loads(p.metadata.annotations[ALLOCATION]) for name, p in bound.items()
        }
        assert {p.spec.scheduler_name for p in bound.values()} == {"mipart-scheduler"}
        partitions = {name: a["partitions"] for name, a in allocations.items()}
        assert all(len(ids) == 1 for ids in partitions.values()), partitions
        assert partitions["first"] != partitions["second"]
        seen = {name: what_it_sees(control_plane, namespace, name) for name in names}
        # Exactly what the extender gave each: its partition, that partition's render node
        # alone, /dev/kfd, its memory limit, and the daemon's start-up socket mounted in.
        assert seen == {
            name: {
                "partitions": partitions[name][0],
                "hip": "0",
                "memory limit": str(allocations[name]["memoryBytes"]),
                "render nodes": [f"renderD{render[partitions[name][0]]}"],
                "kfd": "character special file",
                "startup socket dir": ["startup.sock"],
            }
            for name in names
        }

        # The daemon pod goes; the DaemonSet brings it back.
        before = containers(api, namespace, names)
        old = chart_daemon.pod(api).metadata.uid
        t0 = time.monotonic()
        control_plane.kubectl("delete", "pod", "-n", chart.NAMESPACE, "-l", DAEMON_LABELS)
        wait_until(
            "a new daemon pod Ready",
            lambda: _ready(chart_daemon, api) and chart_daemon.pod(api).metadata.uid != old,
            180,
        )
        back_s = time.monotonic() - t0
        wait_until(
            "the partitions in the node's allocatable again",
            lambda: allocatable(api, real_node.name) == SLOTS,
            TIMEOUT,
        )
        print(f"daemon pod deleted and back, Ready, in {back_s:.1f} s")

        # Nothing of the running pods changed: the same containers, never restarted, each
        # still seeing its own partition; the GPUs kept their layout.
        assert containers(api, namespace, names) == before
        assert {name: what_it_sees(control_plane, namespace, name) for name in names} == seen
        after = chart_daemon.smi.show()["gpus"]
        assert {p["id"]: p["render_minor"] for g in after for p in g["partitions"]} == render


def test_an_inferenceservices_pod_starts_with_its_partition_on_a_real_node(
    api: Any,
    control_plane: ControlPlane,
    real_node: RealNode,
    chart_daemon: ChartDaemon,
    stack: Stack,
    namespace: str,
    services: Services,
) -> None:
    """KServe's real controller makes the pod; mipart's webhook, extender and the chart's
    daemon on the real kubelet give it its partition: the container sees that partition's
    render node, its limit and the start-up socket."""
    wait_until(
        "the partitions in the node's allocatable",
        lambda: allocatable(api, real_node.name) == SLOTS,
        TIMEOUT,
    )
    gpus = chart_daemon.smi.show()["gpus"]
    render = {p["id"]: p["render_minor"] for g in gpus for p in g["partitions"]}
    wait_until(
        "the daemon's GPUNode",
        lambda: kube.gpunode(api, real_node.name).get("status", {}).get("partitionCount") == 8,
        TIMEOUT,
    )
    stack.start_webhook(api)
    stack.start_extender()
    paths = [Path("/dev/kfd")] + [Path(f"/dev/dri/renderD{m}") for m in render.values()]
    with device_nodes(paths):
        services.create(
            services.manifest(
                "chat",
                annotations={MEMORY: "40Gi"},
                predictor={SHARING: "exclusive"},
                container={
                    "image": images.BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                },
                pod={
                    "nodeSelector": {"kubernetes.io/hostname": real_node.name},
                    "tolerations": [{**TAINT, "operator": "Equal"}],
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 0,
                },
            )
        )
        (pod,) = services.bound("chat", 1)
        name = pod["metadata"]["name"]
        running(api, namespace, name)
        allocation = json.loads(pod["metadata"]["annotations"][ALLOCATION])
        (partition,) = allocation["partitions"]
        assert pod["metadata"]["annotations"][SHARING] == "exclusive"  # the predictor's
        assert what_it_sees(control_plane, namespace, name) == {
            "partitions": partition,
            "hip": "0",
            "memory limit": str(40 * 2**30),
            "render nodes": [f"renderD{render[partition]}"],
            "kfd": "character special file",
            "startup socket dir": ["startup.sock"],
        }
