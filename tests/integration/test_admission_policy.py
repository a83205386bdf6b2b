"""Every path to a partition goes through mipart, on the real API server: each way around
placement that a tenant could try, tried with the tenant's own service account (which may
create, update and patch pods, their status and their bindings in its namespace), and refused
with a message that names the key. The chart's admission policies and the webhook run as the
chart installs them (hack/devcluster/stack.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.stack import Stack
from mipart.contract.annotations import (
    ALLOCATION,
    MEMORY,
    PLANNED_MODE,
    PLANNED_PARTITIONS,
    QOS,
    USER_ANNOTATIONS,
)
from mipart.contract.resources import PARTITION_RESOURCE

pytestmark = pytest.mark.integration

TENANT = "tenant"


@pytest.fixture
def tenant(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> Callable[[str], Any]:
    """The attacker: a service account with every pod right in its own namespace (more than
    a tenant usually gets), and mipart's webhook and admission policies in force. Returns
    the CoreV1Api of an identity: "tenant", or a mipart component's service account."""
    rbac = kube.rbac(api)
    kube.core(api).create_namespaced_service_account(namespace, {"metadata": {"name": TENANT}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": TENANT},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "pods/status", "pods/binding"],
                    "verbs": ["create", "get", "list", "update", "patch"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": TENANT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TENANT},
            "subjects": [{"kind": "ServiceAccount", "name": TENANT, "namespace": namespace}],
        },
    )
    stack.start_webhook(api)

    def as_identity(who: str) -> Any:
        ns = namespace if who == TENANT else "mipart-system"
        return kube.core(kube.new_client(control_plane.service_account_kubeconfig(ns, who)))

    return as_identity


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The API server's message for ``call(*args, **kwargs)``, which it must refuse."""
    with pytest.raises(client.ApiException) as refused:
        call(*args, **kwargs)
    assert refused.value.status in (403, 422), refused.value
    message: str = json.loads(refused.value.body or "{}")["message"]
    return message


def pod(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm"}], **spec},
    }
    return body


def asks(partitions: str, where: str = "limits") -> dict[str, Any]:
    return {where: {PARTITION_RESOURCE: partitions}}


def test_a_direct_request_for_the_resource_is_refused(
    tenant: Callable[[str], Any], namespace: str
) -> None:
    core = tenant(TENANT)
    # (An extended resource in requests alone is invalid anyway: limits must name it.)
    for name, resources in (
        ("limits", asks("8")),
        ("both", {**asks("8"), **asks("8", "requests")}),
    ):
        direct = pod(f"direct-{name}")
        direct["spec"]["containers"][0]["resources"] = resources
        message = refusal(core.create_namespaced_pod, namespace, direct)
        assert "mipart.io/partition: requested directly by container(s) vllm" in message


def test_sidecars_and_init_containers_may_not_request_the_resource(
    tenant: Callable[[str], Any], namespace: str
) -> None:
    core = tenant(TENANT)
    sidecar = pod("sidecar", {MEMORY: "8Gi"})
    sidecar["spec"]["containers"].append(
        {"name": "hog", "image": "busybox", "resources": asks("64")}
    )
    message = refusal(core.create_namespaced_pod, namespace, sidecar)
    assert "spec.containers[hog]: mipart.io/partition is given only to the first" in message

    init = pod("init", {MEMORY: "8Gi"})
    init["spec"]["initContainers"] = [{"name": "warm", "image": "busybox", "resources": asks("1")}]
    message = refusal(core.create_namespaced_pod, namespace, init)
    assert "spec.initContainers[warm]: an init container may not request" in message


def test_a_mipart_pod_may_not_preset_its_node(
    tenant: Callable[[str], Any], namespace: str, control_plane: ControlPlane
) -> None:
    core = tenant(TENANT)
    node = control_plane.node_names[0]
    preset = pod("preset", {MEMORY: "8Gi"}, nodeName=node)
    message = refusal(core.create_namespaced_pod, namespace, preset)
    assert f"spec.nodeName: {node} is preset on a pod with mipart.io/ annotations" in message


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"mipart.io/memroy": "20Gi"}, "mipart.io/memroy: unknown annotation"),
        ({QOS: "batch"}, "mipart.io/memory / mipart.io/model: give exactly one"),
        ({MEMORY: "8Gi", QOS: "Latency"}, "mipart.io/qos: 'Latency' is not valid"),
        ({MEMORY: "8Gi", "mipart.io/partition-mode": "qpx"},
         "mipart.io/partition-mode: 'qpx' is not valid"),
        ({MEMORY: "8Gi", ALLOCATION: "{}"}, f"{ALLOCATION}: set only by the mipart extender"),
        ({MEMORY: "8Gi", PLANNED_MODE: "CPX"}, f"{PLANNED_MODE}: set only by mipart-controller"),
    ],
)  # fmt: skip
def test_typos_partial_and_internal_annotations_are_refused_at_creation(
    tenant: Callable[[str], Any], namespace: str, annotations: dict[str, str], expected: str
) -> None:
    core = tenant(TENANT)
    message = refusal(core.create_namespaced_pod, namespace, pod("p", annotations))
    assert expected in message


def test_internal_annotations_are_written_only_by_their_writer(
    tenant: Callable[[str], Any], namespace: str, control_plane: ControlPlane
) -> None:
    core = tenant(TENANT)
    node = control_plane.node_names[0]
    created = core.create_namespaced_pod(namespace, pod("mine", {MEMORY: "8Gi", QOS: "batch"}))
    # Admitted and mutated for the tenant: the partition request comes from mipart.
    assert created.spec.scheduler_name == "mipart-scheduler"
    assert created.spec.containers[0].resources.limits == {PARTITION_RESOURCE: "1"}

    allocation = {"v": 1, "node": node, "partitions": ["gpu0-spx-0"],
                  "memoryBytes": 8 << 30, "sharing": "shared"}  # fmt: skip
    taken = {**allocation, "partitions": ["gpu1-spx-0"]}

    def binding(name: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "annotations": {ALLOCATION: json.dumps(value)}},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }

    # The tenant binds its own pod to a partition of its choosing.
    message = refusal(
        core.create_namespaced_pod_binding,
        "mine",
        namespace,
        binding("mine", taken),
        _preload_content=False,
    )
    assert f"{ALLOCATION}: a Binding that carries mipart.io/ annotations comes only from" in message

    # The extender's service account binds it, as the extender does.
    tenant("mipart-scheduler").create_namespaced_pod_binding(
        "mine", namespace, binding("mine", allocation), _preload_content=False
    )
    bound = core.read_namespaced_pod("mine", namespace)
    assert bound.spec.node_name == node
    assert json.loads(bound.metadata.annotations[ALLOCATION]) == allocation

    # Rewriting or dropping the allocation, through the pod or its status.
    for change in (json.dumps(taken), None):
        patch = {"metadata": {"annotations": {ALLOCATION: change}}}
        for write in (core.patch_namespaced_pod, core.patch_namespaced_pod_status):
            message = refusal(write, "mine", namespace, patch)
            assert f"{ALLOCATION}: set only by the extender's Binding" in message

    # Planning its own mode or partitions, or changing what it asked for.
    for key, value in ((PLANNED_MODE, "SPX"), (PLANNED_PARTITIONS, "{}")):
        patch = {"metadata": {"annotations": {key: value}}}
        for write in (core.patch_namespaced_pod, core.patch_namespaced_pod_status):
            message = refusal(write, "mine", namespace, patch)
            assert f"{key}: written only by mipart-controller" in message
    edits: tuple[tuple[str, str | None], ...] = (
        (QOS, "latency"),
        (MEMORY, None),
        ("mipart.io/memroy", "1Gi"),
    )
    for key, edit in edits:
        patch = {"metadata": {"annotations": {key: edit}}}
        for write in (core.patch_namespaced_pod, core.patch_namespaced_pod_status):
            message = refusal(write, "mine", namespace, patch)
            assert f"{key}: cannot change after the pod is created" in message

    # What each writer may do still works: the controller plans, the tenant labels its pod.
    planned = {"metadata": {"annotations": {PLANNED_MODE: "SPX"}}}
    tenant("mipart-controller").patch_namespaced_pod("mine", namespace, planned)
    core.patch_namespaced_pod("mine", namespace, {"metadata": {"labels": {"team": "a"}}})
    final = core.read_namespaced_pod("mine", namespace)
    assert final.metadata.annotations[PLANNED_MODE] == "SPX"
    assert json.loads(final.metadata.annotations[ALLOCATION]) == allocation
    assert {k: final.metadata.annotations[k] for k in USER_ANNOTATIONS if k in
            final.metadata.annotations} == {MEMORY: "8Gi", QOS: "batch"}  # fmt: skip
