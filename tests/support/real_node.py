"""What the tests on the real node (hack/devcluster/realnode.py) share: pods for it, waiting for
them, `kubectl exec` into them, stand-in GPU device nodes, and what a partition's container sees."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import wait_until
from mipart.contract.resources import PARTITION_RESOURCE

TIMEOUT = 60.0


def pod(
    name: str,
    node: str,
    image: str,
    command: list[str] | None = None,
    *,
    partitions: int = 0,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod bound to node by spec.nodeName (no scheduler), on the host's network (the node has
    only a loopback CNI network), its image imported, never pulled."""
    container: dict[str, Any] = {"name": "c", "image": image, "imagePullPolicy": "Never"}
    if command:
        container["command"] = command
    if partitions:
        container["resources"] = {"limits": {PARTITION_RESOURCE: str(partitions)}}
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
        },
    }


def running(api: Any, namespace: str, name: str) -> Any:
    core = kube.core(api)

    def phase() -> bool:
        return bool(core.read_namespaced_pod(name, namespace).status.phase == "Running")

    wait_until(f"pod {namespace}/{name} Running", phase, TIMEOUT)
    return core.read_namespaced_pod(name, namespace)


def exec_in(plane: ControlPlane, namespace: str, name: str, *command: str) -> str:
    result = plane.kubectl("exec", "-n", namespace, name, "--", *command, check=False)
    assert result.returncode == 0, f"kubectl exec {' '.join(command)}: {result.stderr}"
    return result.stdout


@contextlib.contextmanager
def device_nodes(paths: list[Path]) -> Iterator[None]:
    """Stand-ins for the GPU device nodes that the daemon's CDI specs name (the emulated
    MI300X has none): character devices with /dev/null's numbers, made only where nothing
    exists, and removed afterwards. The runtime stats each one to create it in the container."""
    null = os.stat("/dev/null").st_rdev
    made: list[Path] = []
    try:
        for path in paths:
            if not path.parent.exists():
                path.parent.mkdir(parents=True)
                made.append(path.parent)
            if not path.exists():
                os.mknod(path, 0o666 | stat.S_IFCHR, null)
                made.append(path)
        yield
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()


def allocatable(api: Any, node: str) -> str | None:
    value = kube.core(api).read_node(node).status.allocatable.get(PARTITION_RESOURCE)
    return None if value is None else str(value)


def what_it_sees(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    env = dict(
        line.split("=", 1)
        for line in exec_in(plane, namespace, name, "env").splitlines()
        if "=" in line
    )
    startup_dir = env.get("MIPART_STARTUP_SOCKET", "/nowhere").rsplit("/", 1)[0]
    return {
        "partitions": env.get("MIPART_PARTITIONS"),
        "hip": env.get("HIP_VISIBLE_DEVICES"),
        "memory limit": env.get("MIPART_MEMORY_LIMIT_BYTES"),
        "render nodes": exec_in(plane, namespace, name, "ls", "/dev/dri").split(),
        "kfd": exec_in(plane, namespace, name, "stat", "-c", "%F", "/dev/kfd").strip(),
        "startup socket dir": exec_in(plane, namespace, name, "ls", startup_dir).split(),
    }
