"""The QoS queue on the real control plane: the webhook gates opted-in pods, mipart-controller
releases them in class order as its own service account, kube-scheduler and the extender bind.

300 batch pods are queued (released at 5 pods/s, so most still wait), then 5 latency pods
arrive: they are bound before the batch pods still waiting (all but those the controller
released before it saw the latency pods).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from hack.devcluster import kube, queue_scenario
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack

pytestmark = pytest.mark.integration


def test_webhook_gates_only_opted_in_pods_with_their_class_priority(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    stack.start_webhook(api)
    core = kube.core(api)
    core.create_namespaced_pod(namespace, queue_scenario.queued_pod("early", "batch", "8Gi"))
    queued = core.create_namespaced_pod(namespace, queue_scenario.queued_pod("q", "latency", "4Gi"))
    assert [g.name for g in queued.spec.scheduling_gates] == ["mipart.io/queue"]
    assert queued.spec.priority_class_name == "mipart-latency"
    assert queued.spec.priority == 100000
    # No controller runs here: both wait, and the queue shows the latency pod first.
    shown = subprocess.run(
        [sys.executable, "-m", "mipart.controller.cli", "--kubeconfig",
         str(control_plane.kubeconfig), "-n", namespace, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["position"], r["qos"], r["pod"]) for r in rows] == [
        (1, "latency", f"{namespace}/q"),
        (2, "batch", f"{namespace}/early"),
    ]
    assert rows[1]["memoryPerPartition"] == "8Gi"
    plain = queue_scenario.queued_pod("plain", "batch", "4Gi")
    del plain["metadata"]["annotations"]["mipart.io/queue"]
    created = core.create_namespaced_pod(namespace, plain)
    assert not created.spec.scheduling_gates
    assert created.spec.priority_class_name is None
    contradicting = queue_scenario.queued_pod("other", "batch", "4Gi")
    contradicting["spec"]["priorityClassName"] = "mipart-latency"
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, contradicting)
    assert "spec.priorityClassName: 'mipart-latency' contradicts mipart.io/queue" in str(
        refused.value.body
    )


def test_latency_pods_overtake_three_hundred_queued_batch_pods(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    # 4 nodes: a kwok node takes 110 pods, as a kubelet does by default. 32 SPX GPUs have
    # room for far more than the 305 pods of 4Gi.
    for name in control_plane.node_names[:4]:
        stack.start_daemon(name)
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()
    stack.start_controller("--release-rate", "5", "--release-burst", "5")

    run = queue_scenario.run(api, namespace, batch=300, latency=5)

    assert len(run.gated_at_latency) >= 100, "the queue drained before the latency pods came"
    # In FIFO order, the latency pods would wait behind every one of those batch pods. The
    # queue puts them first: at most one round of releases (the burst of 5) that the
    # controller made before its watch showed it the latency pods may bind before them.
    overtook = run.overtaken_by("latency-")
    assert len(overtook) <= 5, f"{len(overtook)} waiting batch pods bound first: {overtook}"
    waits = run.creation_to_bind("latency-")
    print(
        f"latency creation-to-bind: median {statistics.median(waits):.2f} s, "
        f"max {waits[-1]:.2f} s; {len(overtook)} of {len(run.gated_at_latency)} waiting "
        "batch pods bound first"
    )

    # Each pod was told it was queued, and the controller counted what it released.
    events = kube.events(api).list_namespaced_event(namespace, field_selector="reason=Queued")
    assert events.items, "no Queued Event"
    assert "batch queue, position" in events.items[0].note
    with urllib.request.urlopen(stack.controller_metrics) as response:
        metrics = response.read().decode()
    assert 'mipart_queue_released_total{qos="latency"} 5.0' in metrics
    assert 'mipart_queue_released_total{qos="batch"} 300.0' in metrics
    wait_until(
        "queue empty",
        lambda: 'mipart_queue_depth{qos="batch"} 0.0' in _metrics(stack),
        timeout=10,
    )


def _metrics(stack: Stack) -> str:
    with urllib.request.urlopen(stack.controller_metrics) as response:
        return str(response.read().decode())


def test_a_latency_pod_preempts_batch_pods_and_a_budget_holds(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    node = control_plane.node_names[0]
    stack.start_daemon(node)  # 8 SPX GPUs; 3 batch pods of 60Gi fill each
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()
    stack.start_controller("--retry-refused-after", "2")
    core = kube.core(api)
    for i in range(24):
        pod = queue_scenario.queued_pod(f"batch-{i:02d}", "batch", "60Gi")
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
        core.create_namespaced_pod(namespace, pod)
    wait_until("24 batch pods bound", lambda: len(_allocations(api, namespace)) == 24, timeout=120)
    # kube-scheduler's own preemption, through the extender's preempt verb, gets the same
    # cut: a latency pod may evict the three batch pods of one GPU, a batch pod none.
    uids = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace).items}
    for qos, victims in (("latency", 3), ("batch", 0)):
        answer = _preempt(control_plane, node, qos, [uids[n] for n in _allocations(api, namespace)])
        assert sum(len(v["Pods"]) for v in answer.values()) == victims, (qos, answer)
    # First a PodDisruptionBudget forbids evicting any of them: the controller must find no
    # victim and evict nobody.
    for name in _allocations(api, namespace):
        core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {"protect": "yes"}}})
    budget = kube.policy(api)
    budget.create_namespaced_pod_disruption_budget(namespace, _budget(24))
    wait_until(
        "the budget counts its pods",
        lambda: (
            budget.read_namespaced_pod_disruption_budget(
                "protect", namespace
            ).status.current_healthy
            == 24
        ),
        timeout=60,
    )
    latency = queue_scenario.queued_pod("chat", "latency", "150Gi")
    latency["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    core.create_namespaced_pod(namespace, latency)
    wait_until(
        "a refused preemption", lambda: "PreemptionRefused" in _reasons(api, namespace), timeout=30
    )
    assert len(_allocations(api, namespace)) == 24, "a pod under the budget was evicted"
    # Then GPU 7's three pods leave that budget for one that lets one of them go at a time:
    # evicting them one by one would pass each dry run, and lose the first for nothing.
    by_gpu: dict[str, list[str]] = {}
    for name, allocation in _allocations(api, namespace).items():
        by_gpu.setdefault(allocation["partitions"][0].split("-")[0], []).append(name)
    for name in by_gpu["gpu7"]:
        core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {"protect": "gpu7"}}})
    one_at_a_time = {
        "metadata": {"name": "gpu7"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"protect": "gpu7"}}},
    }
    budget.create_namespaced_pod_disruption_budget(namespace, one_at_a_time)
    budget.delete_namespaced_pod_disruption_budget("protect", namespace)
    budget.create_namespaced_pod_disruption_budget(namespace, _budget(21))
    refusals = _refusals(stack)
    wait_until("the set refused as a whole", lambda: _refusals(stack) > refusals + 1, timeout=30)
    assert len(_allocations(api, namespace)) == 24, "a pod was evicted for nothing"
    # Once that budget goes too, exactly GPU 7's three pods make room.
    budget.delete_namespaced_pod_disruption_budget("gpu7", namespace)
    wait_until(
        "the latency pod bound",
        lambda: "chat" in _allocations(api, namespace),
        timeout=120,
    )
    allocations = _allocations(api, namespace)
    assert allocations["chat"]["partitions"][0].startswith("gpu7-")
    assert sorted(set(by_gpu["gpu7"]) - set(allocations)) == sorted(by_gpu["gpu7"])
    assert len(allocations) == 24 - 3 + 1, "exactly GPU 7's three pods went"
    assert {"Preempting", "Preempted"} <= _reasons(api, namespace)


def _preempt(control_plane: ControlPlane, node: str, qos: str, uids: list[str]) -> dict[str, Any]:
    pod = queue_scenario.queued_pod("preemptor", qos, "150Gi")
    pod["metadata"]["uid"] = "preemptor-uid"
    body = {
        "Pod": pod,
        "NodeNameToMetaVictims": {
            node: {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": 0}
        },
    }
    request = urllib.request.Request(
        control_plane.extender.url("/preempt"),
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=control_plane.extender.ssl_context()) as response:
        answer: dict[str, Any] = json.loads(response.read())["NodeNameToMetaVictims"]
    return answer


def _refusals(stack: Stack) -> float:
    for line in _metrics(stack).splitlines():
        if line.startswith('mipart_queue_preemptions_total{result="refused"}'):
            return float(line.split()[-1])
    return 0.0


def _budget(min_available: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "protect"},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"protect": "yes"}}},
    }


def _reasons(api: Any, namespace: str) -> set[str]:
    # Raw JSON: the client's Event model rejects the Events other controllers write (no
    # eventTime), such as the disruption controller's.
    listing = kube.events(api).list_namespaced_event(namespace, _preload_content=False)
    return {e.get("reason") for e in json.loads(listing.data)["items"]}


def _allocations(api: Any, namespace: str) -> dict[str, dict[str, Any]]:
    """Pod name -> its allocation, for pods bound and not going away."""
    out = {}
    for pod in kube.core(api).list_namespaced_pod(namespace).items:
        text = (pod.metadata.annotations or {}).get("mipart.io/allocation")
        if text and pod.spec.node_name and not pod.metadata.deletion_timestamp:
            out[pod.metadata.name] = json.loads(text)
    return out
