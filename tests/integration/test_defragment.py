"""Defragmentation (mipart-controller --defragment on) on the real control plane: a node whose
GPUs are all CPX and all in use, GPU 7 by two small batch pods, and a queued 70B standard pod
that only an SPX GPU can hold. While a PodDisruptionBudget covers the batch pods nothing is
evicted and the GPUNode says why; once it goes, the controller (its own service account)
evicts exactly GPU 7's batch pods, the GPU becomes SPX and the 70B pod is bound there."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from hack.devcluster import kube, queue_scenario
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack

pytestmark = pytest.mark.integration
GIB = 2**30


def test_batch_pods_of_a_nearly_empty_gpu_make_way_for_a_waiting_standard_pod(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    node = control_plane.node_names[0]
    # GPUNodes that earlier tests' daemons left stay ready for a while: the queue would see
    # room for the 70B pod there and release it before its GPU is freed (it then backs off in
    # kube-scheduler, pinned to this node). This test is about one node.
    objects = kube.custom_objects(api)
    for item in objects.list_cluster_custom_object(*kube.GPUNODES)["items"]:
        if item["metadata"]["name"] != node:
            objects.delete_cluster_custom_object(*kube.GPUNODES, item["metadata"]["name"])
    daemon = stack.start_daemon(node, dict.fromkeys(range(8), "CPX"))
    core = kube.core(api)
    held: dict[str, tuple[str, str | None]] = {
        f"standard-{gpu}": (f"gpu{gpu}-cpx-0", None) for gpu in range(7)
    }
    held |= {f"batch-{i}": (f"gpu7-cpx-{i}", "batch") for i in range(2)}
    for name, (partition, qos) in held.items():
        pod = kube.bound_pod(name, node, [partition], 10 * GIB, scheduler_name="mipart-scheduler")
        if qos is not None:
            pod["metadata"]["annotations"]["mipart.io/qos"] = qos
            pod["metadata"]["labels"] = {"protect": "yes"}
        core.create_namespaced_pod(namespace, pod)
    budgets = kube.policy(api)
    budgets.create_namespaced_pod_disruption_budget(
        namespace,
        {"metadata": {"name": "protect"},
         "spec": {"minAvailable": 2, "selector": {"matchLabels": {"protect": "yes"}}}},
    )  # fmt: skip
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()
    stack.start_controller("--plan-settle", "1", "--plan-cooldown", "5", "--defragment", "on",
                           "--retry-refused-after", "5")  # fmt: skip

    big = queue_scenario.queued_model_pod(
        "llama-70b", "standard", "meta-llama/Llama-3.1-70B-Instruct", node
    )
    core.create_namespaced_pod(namespace, big)

    wait_until(
        "a refused defragmentation",
        lambda: "DefragmentationRefused" in _node_reasons(api, node),
        timeout=60,
    )
    assert _bound(api, namespace) == set(held), "a pod under the budget was evicted"
    budgets.delete_namespaced_pod_disruption_budget("protect", namespace)

    def allocation() -> dict[str, Any] | None:
        return kube.allocation(api, namespace, "llama-70b")

    wait_until("the 70B pod bound", lambda: allocation() is not None, timeout=120)
    assert allocation()["partitions"] == ["gpu7-spx-0"]  # type: ignore[index]
    # Exactly GPU 7's batch pods went; every standard pod stayed where it was.
    assert _bound(api, namespace) == {*(n for n in held if n.startswith("standard")), "llama-70b"}
    modes = {g["index"]: g["compute_partition"] for g in daemon.show()["gpus"]}
    assert modes == {**dict.fromkeys(range(7), "CPX"), 7: "SPX"}
    assert "Defragmenting" in _node_reasons(api, node)
    pod_events = _events(api, namespace)
    defragmented = {e["regarding"]["name"] for e in pod_events if e.get("reason") == "Defragmented"}
    assert defragmented == {"batch-0", "batch-1"}
    with urllib.request.urlopen(stack.controller_metrics) as response:
        metrics = response.read().decode()
    assert 'mipart_defrag_gpus_total{result="evicted"} 1.0' in metrics
    assert "mipart_defrag_evicted_pods_total 2.0" in metrics
    assert 'mipart_defrag_gpus_total{result="refused"}' in metrics


def _bound(api: Any, namespace: str) -> set[str]:
    return {
        p.metadata.name
        for p in kube.core(api).list_namespaced_pod(namespace).items
        if p.spec.node_name and not p.metadata.deletion_timestamp
    }


def _events(api: Any, namespace: str) -> list[dict[str, Any]]:
    # Raw JSON: the client's Event model rejects Events other controllers write (no eventTime).
    listing = kube.events(api).list_namespaced_event(namespace, _preload_content=False)
    items: list[dict[str, Any]] = json.loads(listing.data)["items"]
    return items


def _node_reasons(api: Any, node: str) -> set[str]:
    events = _events(api, "default")
    return {str(e.get("reason")) for e in events if e["regarding"].get("name") == node}
