"""Fake MI300X nodes, kept alive by kwok: Ready, heartbeating, and running the pods bound to
them (kwok plays every kubelet, so pods reach Running without containers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hack.devcluster.binaries import Binaries
from mipart.contract.resources import PARTITION_RESOURCE

# kwok manages only the nodes carrying this annotation (kwok's own convention).
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_SELECTOR = f"{KWOK_ANNOTATION}=fake"

GPU_PRODUCT_LABEL = "mipart.io/gpu-product"
GPU_COUNT_LABEL = "mipart.io/gpu-count"

# An 8-GPU MI300X machine as the clouds sell it (Azure ND MI300X v5: 96 vCPUs, 1850 GiB).
# All GPUs start in SPX/NPS1, so the node has 8 partitions of 192 GB each.
INSTANCE_TYPE = "Standard_ND96isr_MI300X_v5"
GPUS_PER_NODE = 8


def node_name(index: int) -> str:
    return f"mi300x-{index}"


def mi300x_node(name: str, *, partitions: int = GPUS_PER_NODE) -> dict[str, Any]:
    """A Node object as a kubelet on an MI300X machine with the mipart device plugin would
    register it: labels for placement, and the partitions as an extended resource."""
    resources = {
        "cpu": "96",
        "memory": "1850Gi",
        "ephemeral-storage": "28Ti",
        "pods": "110",
        PARTITION_RESOURCE: str(partitions),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": INSTANCE_TYPE,
                "type": "kwok",
                GPU_PRODUCT_LABEL: "MI300X",
                GPU_COUNT_LABEL: str(GPUS_PER_NODE),
            },
        },
        # A node may carry its status on create (the kubelet registers that way); kwok's
        # node-initialize stage keeps capacity and allocatable and adds conditions.
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def kwok_argv(binaries: Binaries, kubeconfig: Path, server_port: int, stages: Path) -> list[str]:
    return [
        binaries("kwok"),
        f"--kubeconfig={kubeconfig}",
        f"--config={stages}",
        f"--manage-nodes-with-annotation-selector={KWOK_SELECTOR}",
        # Its HTTP server (logs, exec, metrics of the fake kubelets) on loopback only.
        f"--server-address=127.0.0.1:{server_port}",
        "--node-ip=10.240.0.1",
        "--cidr=10.244.0.0/16",
        # Keep a node lease like a kubelet does, so the node lifecycle controller sees the
        # nodes alive and leaves them Ready.
        "--node-lease-duration-seconds=40",
    ]
