"""What each mipart component may write, narrower than its RBAC: tried on the real API server
with each component's own service account, with the chart's admission policies in force
(manifests/charts/mipart/templates/access-policy.yaml). Each forbidden write gets 403 and a
message that says what the component may write instead."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.stack import Stack

pytestmark = pytest.mark.integration

NAMESPACE = "mipart-system"


def forbidden(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The API server's 403 message for ``call``, which it must refuse. A policy just created
    takes the API server a moment to load: until then the call is tried again (each try
    writes what is there already)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            call(*args, **kwargs)
        except client.ApiException as err:
            refused = err
        else:
            assert time.monotonic() < deadline, "the API server never refused it"
            time.sleep(0.5)
            continue
        assert refused.status == 403, refused
        message: str = json.loads(refused.body or "{}")["message"]
        return message


def test_a_daemon_writes_only_its_own_nodes_gpunode(
    stack: Stack, api: Any, control_plane: ControlPlane
) -> None:
    """A node's daemon token (bound to its pod, as a DaemonSet pod's is) names its node; with
    it, the daemon's own GPUNode status is written and the other node's is refused, and a
    token bound to no pod writes none: one compromised node cannot fake the others'
    inventory."""
    own, other = control_plane.node_names[:2]
    for name in (own, other):
        stack.start_daemon(name)
    stack.start_webhook(api)  # the chart's policies come with it
    stack.wait_published(api)

    def as_daemon(node: str | None) -> Any:
        kubeconfig = control_plane.service_account_kubeconfig(NAMESPACE, "mipart-daemon", node=node)
        return kube.custom_objects(kube.new_client(kubeconfig))

    mine = as_daemon(own)
    status = {"status": kube.gpunode(api, own)["status"]}
    mine.patch_cluster_custom_object_status(*kube.GPUNODES, own, status)

    theirs = {"status": kube.gpunode(api, other)["status"]}
    message = forbidden(mine.patch_cluster_custom_object_status, *kube.GPUNODES, other, theirs)
    assert (
        f"gpunodes/{other}: mipart-daemon writes only the GPUNode of the node its pod runs on "
        f"(here {own})"
    ) in message
    unbound = as_daemon(None)
    message = forbidden(unbound.patch_cluster_custom_object_status, *kube.GPUNODES, own, status)
    assert "its token is bound to no pod on a node" in message


def test_a_daemon_deletes_only_mipart_pods_on_its_own_node(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    """A daemon ends a pod over its memory limit by deleting it; its RBAC grants delete on
    every pod, the policy only on mipart pods of its own node. An Eviction, which would hide
    the pod's node from admission, it may not create at all."""
    own, other = control_plane.node_names[:2]
    core = kube.core(api)

    def pod(name: str, node: str, *, mipart: bool) -> None:
        annotations = {"mipart.io/allocation": json.dumps({"v": 1, "node": node})}
        body = {
            "metadata": {"name": name, "annotations": annotations if mipart else {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "vllm"}]},
        }
        core.create_namespaced_pod(namespace, body)

    # Made as an extender would leave them, before the webhook (which refuses a preset
    # nodeName) is up.
    pod("mine", own, mipart=True)
    pod("theirs", other, mipart=True)
    pod("tenant", own, mipart=False)
    stack.start_webhook(api)  # the chart's policies come with it

    def as_daemon(node: str | None) -> Any:
        kubeconfig = control_plane.service_account_kubeconfig(NAMESPACE, "mipart-daemon", node=node)
        return kube.core(kube.new_client(kubeconfig))

    daemon = as_daemon(own)
    # Dry runs pass through admission too, so trying again while the policy loads deletes
    # nothing; the real call after it must be refused just the same.
    for name in ("theirs", "tenant"):
        message = forbidden(daemon.delete_namespaced_pod, name, namespace, dry_run="All")
        assert (
            f"pods/{namespace}/{name}: mipart-daemon deletes only mipart pods on the node its "
            f"pod runs on (here {own})"
        ) in message
        with pytest.raises(client.ApiException) as refused:
            daemon.delete_namespaced_pod(name, namespace)
        assert refused.value.status == 403
    message = forbidden(as_daemon(None).delete_namespaced_pod, "mine", namespace, dry_run="All")
    assert "its token is bound to no pod on a node" in message

    eviction = {"metadata": {"name": "mine", "namespace": namespace}}
    with pytest.raises(client.ApiException) as refused:
        daemon.create_namespaced_pod_eviction("mine", namespace, eviction)
    assert refused.value.status == 403
    assert "pods/eviction" in json.loads(refused.value.body or "{}")["message"]  # RBAC's refusal

    daemon.delete_namespaced_pod("mine", namespace)
    left = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
    assert "mine" not in left or left["mine"].metadata.deletion_timestamp is not None
    assert all(left[name].metadata.deletion_timestamp is None for name in ("theirs", "tenant"))


def test_the_controller_changes_only_mipart_pods(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    """The controller's RBAC lets it patch any pod (it releases queued pods, with their plan);
    the policy narrows that to pods with mipart.io/ annotations: not a plain pod of a tenant,
    not a kube-system pod."""
    stack.start_webhook(api)
    core = kube.core(api)
    plain = {
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "app"}], "schedulerName": "nobody"},
    }
    core.create_namespaced_pod(namespace, plain)
    controller = kube.core(
        kube.new_client(control_plane.service_account_kubeconfig(NAMESPACE, "mipart-controller"))
    )
    label = {"metadata": {"labels": {"hijacked": "yes"}}}
    message = forbidden(controller.patch_namespaced_pod, "plain", namespace, label)
    assert (
        f"pods/{namespace}/plain: mipart-controller changes only pods with mipart.io/ annotations"
    ) in message
    system = {**plain, "metadata": {"name": "system-workload"}}
    core.create_namespaced_pod("kube-system", system)
    try:
        forbidden(controller.patch_namespaced_pod, "system-workload", "kube-system", label)
    finally:
        core.delete_namespaced_pod("system-workload", "kube-system", grace_period_seconds=0)

    # A pod of mipart's own it may change (what releasing a queued pod writes is its own
    # test's business: tests/integration/test_queue.py).
    mipart = {
        "metadata": {"name": "queued", "annotations": {"mipart.io/memory": "8Gi"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
    }
    core.create_namespaced_pod(namespace, mipart)  # the webhook makes it mipart's
    controller.patch_namespaced_pod("queued", namespace, {"metadata": {"labels": {"ok": "yes"}}})
