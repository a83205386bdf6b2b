"""A daemon restart is harmless: SIGKILL with 8 live allocations changes nothing.

The daemon runs with its device plugin as its own service account on the real control plane;
the kubelet peer admitted 8 pods (Allocate + PreStartContainer), whose containers "run" as
fake processes on their partitions. After a SIGKILL and a restart, the daemon must rebuild
what it knows from the API (allocations), the kubelet (pod-resources) and amdsmi (partitions,
processes) without touching any of them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hack.devcluster import kube
from hack.devcluster.node import Node
from hack.devcluster.procs import wait_until
from tests.integration.test_device_plugin import create_pod, layout, plans
from tests.support.kubelet_peer import KubeletPeer

LIVE = 8


def cdi_specs(cdi_dir: Path) -> dict[str, tuple[str, int]]:
    """Spec file -> (content, mtime_ns): a rewrite shows even when the content is equal."""
    return {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in sorted(cdi_dir.glob("*.json"))}


def hardware(node: Node) -> list[tuple[int, str, list[tuple[str, list[int]]]]]:
    """Per GPU: its mode and, per partition, the pids on it."""
    return [
        (
            g["index"],
            g["compute_partition"],
            [(p["id"], sorted(q["pid"] for q in p.get("processes", []))) for p in g["partitions"]],
        )
        for g in node.show()["gpus"]
    ]


def test_sigkill_with_live_allocations_changes_nothing(
    plugged: tuple[Node, KubeletPeer, str], api: Any, namespace: str
) -> None:
    node, peer, node_name = plugged
    node.smi_ok("set", "compute", "CPX", "--gpu", "0")
    render = layout(node)
    pods = plans(node_name)[:LIVE]  # gpu0-cpx-0 ... gpu0-cpx-7, 1-8 GiB each
    names = [f"live-{n}" for n in range(LIVE)]
    for n, plan in enumerate(pods):
        uid = create_pod(api, namespace, names[n], node_name, plan)
        peer.admit(namespace, names[n], uid, plan["containers"])
        partition = plan["allocation"]["partitions"][0]
        node.emu("ps", "add", "--gpu", "0", "--partition", partition.rsplit("-", 1)[1],
                 "--pid", str(5000 + n), "--name", f"vllm-{n}", "--vram", f"{n + 1}G")  # fmt: skip
    wait_until(
        "GPUNode counts the 8 allocations",
        lambda: kube.gpunode(api, node_name).get("status", {}).get("freeMemory") == "1499Gi",
        timeout=30,
    )
    before_status = kube.gpunode(api, node_name)["status"]
    before_hw = hardware(node)
    before_cdi = cdi_specs(peer.cdi_dir)
    assert len(before_cdi) == LIVE
    containers = {pod.name: pod.containers for pod in peer.pods()}
    registrations = len(peer.endpoints)

    node.kill()
    peer.registered.clear()
    node.start()

    assert peer.registered.wait(15), "the plugin did not register again"
    assert len(peer.endpoints) == registrations + 1
    assert len(peer.wait_devices(120)) == 120  # 15 partitions x 8, as before the kill
    # Nothing of the running containers was touched: partitions, processes, CDI specs.
    assert hardware(node) == before_hw
    time.sleep(3)  # a few hardware polls and a cleanup pass of the restarted daemon
    assert cdi_specs(peer.cdi_dir) == before_cdi
    assert layout(node) == render
    assert {pod.name: pod.containers for pod in peer.pods()} == containers
    # Allocations were rebuilt from the API: with its processes gone, GPU 0 is still held by
    # the 8 pods and cannot change.
    node.emu("ps", "rm", "--all")
    refused = node.smi("set", "compute", "SPX", "--gpu", "0")
    assert refused.returncode != 0
    assert f"{namespace}/live-0 on gpu0-cpx-0" in refused.stderr
    # The GPUNode says the same as before, with a newer heartbeat.
    wait_until(
        "a new heartbeat",
        lambda: (
            kube.gpunode(api, node_name)["status"]["heartbeatTime"] > before_status["heartbeatTime"]
        ),
        timeout=30,
    )
    after_status = kube.gpunode(api, node_name)["status"]
    for key in ("freeMemory", "gpus", "memoryPartition", "partitionCount"):
        assert json.dumps(after_status[key], sort_keys=True) == json.dumps(
            before_status[key], sort_keys=True
        ), key
    ready = {c["type"]: c["status"] for c in after_status["conditions"]}
    assert ready["Ready"] == "True"
    # And the plugin still serves: a ninth pod is admitted with its own partition.
    extra = {**pods[0], "allocation": {**pods[0]["allocation"], "memoryBytes": 2**30}}
    uid = create_pod(api, namespace, "after-restart", node_name, extra)
    admitted = peer.admit(namespace, "after-restart", uid, extra["containers"])
    assert admitted.containers["main"].env["MIPART_PARTITIONS"] == "gpu0-cpx-0"
