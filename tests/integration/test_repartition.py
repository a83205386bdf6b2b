"""The re-partition planner on the real control plane: a node whose GPUs are all CPX, seven
of them holding an allocation and one idle, and a queued 70B bf16 pod that only an SPX GPU
can hold. The controller (its own service account) writes GPUNode.spec for the idle GPU, the
daemon switches it, and the pod is bound there; no GPU with an allocation changes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from hack.devcluster import kube, queue_scenario
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack
from mipart.contract import planned_partitions

pytestmark = pytest.mark.integration
GIB = 2**30


def test_an_idle_cpx_gpu_becomes_spx_for_a_waiting_70b_pod(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    node = control_plane.node_names[0]
    daemon = stack.start_daemon(node, dict.fromkeys(range(8), "CPX"))
    core = kube.core(api)
    for gpu in range(7):
        held = kube.bound_pod(f"held-{gpu}", node, [f"gpu{gpu}-cpx-0"], 10 * GIB,
                              scheduler_name="mipart-scheduler")  # fmt: skip
        core.create_namespaced_pod(namespace, held)
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()
    stack.start_controller("--plan-settle", "1", "--plan-cooldown", "5")

    big = queue_scenario.queued_model_pod(
        "llama-70b", "standard", "meta-llama/Llama-3.1-70B-Instruct", node
    )
    core.create_namespaced_pod(namespace, big)

    def allocation() -> dict[str, Any] | None:
        return kube.allocation(api, namespace, "llama-70b")

    wait_until("the 70B pod bound", lambda: allocation() is not None, timeout=120)
    assert allocation()["partitions"] == ["gpu7-spx-0"]  # type: ignore[index]
    # Released held to the mode the plan counted it on, and to the partition it promised.
    annotations = core.read_namespaced_pod("llama-70b", namespace).metadata.annotations
    assert annotations["mipart.io/planned-mode"] == "SPX"
    hold = planned_partitions.decode(annotations["mipart.io/planned-partitions"])
    assert (hold.node, hold.partition_ids) == (node, ("gpu7-spx-0",))
    modes = {g["index"]: g["compute_partition"] for g in daemon.show()["gpus"]}
    assert modes == {**dict.fromkeys(range(7), "CPX"), 7: "SPX"}
    gpunode = kube.gpunode(api, node)
    assert gpunode["spec"]["gpus"] == [{"index": 7, "computePartition": "SPX"}]
    assert "7" in json.loads(gpunode["metadata"]["annotations"]["mipart.io/changed-at"])
    events = kube.events(api).list_namespaced_event(
        "default", field_selector=f"regarding.name={node},reason=Repartition"
    )
    assert events.items, "no Repartition Event on the GPUNode"
    assert "SPX" in events.items[0].note
    with urllib.request.urlopen(stack.controller_metrics) as response:
        metrics = response.read().decode()
    assert 'mipart_planner_decisions_total{from="CPX",kind="compute",to="SPX"} 1.0' in metrics
