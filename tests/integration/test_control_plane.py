"""The test control plane is the real thing: the real kube-scheduler binds pods to kwok's MI300X
nodes, the apiserver enforces the CRD schema from manifests/ and RBAC, and the mipart scheduler
profile from the chart schedules exactly the pods that name it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from hack.devcluster import chart, kube, kubeconfig
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.kwok import GPU_PRODUCT_LABEL
from hack.devcluster.procs import wait_until
from hack.devcluster.webhook_server import DENY_LABEL, WebhookServer
from mipart.contract.resources import PARTITION_RESOURCE

pytestmark = pytest.mark.integration

TIMEOUT = 90.0  # a bound on waiting, not a performance assertion
GROUP, VERSION, PLURAL = "mipart.io", "v1alpha1", "gpunodes"


def pod(name: str, *, scheduler: str | None = None, partitions: int = 1) -> dict[str, Any]:
    """A pod; ``partitions=0`` requests no mipart.io/partition (so that mipart's profile
    places it without consulting its extender, which these tests do not run)."""
    container: dict[str, Any] = {"name": "main", "image": "registry.k8s.io/pause:3.10"}
    if partitions:
        container["resources"] = {
            "requests": {PARTITION_RESOURCE: str(partitions)},
            "limits": {PARTITION_RESOURCE: str(partitions)},
        }
    spec: dict[str, Any] = {"containers": [container]}
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def events_about(api: Any, namespace: str, pod_name: str) -> list[Any]:
    events = kube.events(api).list_namespaced_event(namespace).items
    return [e for e in events if e.regarding is not None and e.regarding.name == pod_name]


def scheduled_by(api: Any, namespace: str, pod_name: str) -> set[str]:
    """The schedulers that reported a Scheduled event for the pod (each profile reports under
    its own schedulerName)."""
    return {
        e.reporting_controller
        for e in events_about(api, namespace, pod_name)
        if e.reason == "Scheduled"
    }


def wait_scheduled_by(api: Any, namespace: str, pod_name: str) -> set[str]:
    """scheduled_by, once the event has arrived: schedulers send events asynchronously, so a
    pod can be Running before its Scheduled event is stored."""
    wait_until(
        f"a Scheduled event for {namespace}/{pod_name}",
        lambda: bool(scheduled_by(api, namespace, pod_name)),
        TIMEOUT,
    )
    return scheduled_by(api, namespace, pod_name)


def wait_for_phase(core: Any, namespace: str, name: str, phase: str) -> Any:
    def reached() -> bool:
        return bool(core.read_namespaced_pod(name, namespace).status.phase == phase)

    wait_until(f"pod {namespace}/{name} {phase}", reached, TIMEOUT)
    return core.read_namespaced_pod(name, namespace)


def test_kubectl_lists_the_kwok_nodes_as_ready(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("get", "nodes", "-o", "json").stdout
    nodes = {n["metadata"]["name"]: n for n in json.loads(out)["items"]}

    assert set(nodes) == set(control_plane.node_names)
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        assert node["metadata"]["labels"][GPU_PRODUCT_LABEL] == "MI300X"
        assert node["status"]["allocatable"][PARTITION_RESOURCE] == "8"


def test_default_scheduler_binds_a_pod_to_a_kwok_node_and_it_runs(
    api: Any, control_plane: ControlPlane, namespace: str
) -> None:
    core = kube.core(api)
    core.create_namespaced_pod(namespace, pod("web"))

    running = wait_for_phase(core, namespace, "web", "Running")

    assert running.spec.node_name in control_plane.node_names
    assert wait_scheduled_by(api, namespace, "web") == {"default-scheduler"}


def test_scheduler_respects_the_partition_capacity_of_the_nodes(api: Any, namespace: str) -> None:
    core = kube.core(api)
    # Each node has 8 partitions; nine fit on none of them.
    core.create_namespaced_pod(namespace, pod("too-big", partitions=9))

    def failed_scheduling() -> bool:
        events = core.list_namespaced_event(namespace).items
        return any(
            e.involved_object.name == "too-big"
            and e.reason == "FailedScheduling"
            and f"Insufficient {PARTITION_RESOURCE}" in (e.message or "")
            for e in events
        )

    wait_until("FailedScheduling for too-big", failed_scheduling, TIMEOUT)
    assert core.read_namespaced_pod("too-big", namespace).spec.node_name is None


def test_mipart_profile_schedules_only_the_pods_that_name_it(
    api: Any, control_plane: ControlPlane, namespace: str
) -> None:
    core = kube.core(api)
    # Created first, so that by the time the later pods are bound, any scheduler that would
    # take it has had its turn.
    core.create_namespaced_pod(namespace, pod("orphan", scheduler="no-such-scheduler"))
    core.create_namespaced_pod(namespace, pod("mipart", scheduler="mipart-scheduler", partitions=0))
    core.create_namespaced_pod(namespace, pod("plain"))

    mipart = wait_for_phase(core, namespace, "mipart", "Running")
    wait_for_phase(core, namespace, "plain", "Running")

    assert mipart.spec.node_name in control_plane.node_names
    assert wait_scheduled_by(api, namespace, "mipart") == {"mipart-scheduler"}
    assert wait_scheduled_by(api, namespace, "plain") == {"default-scheduler"}
    orphan = core.read_namespaced_pod("orphan", namespace)
    assert orphan.status.phase == "Pending"
    assert orphan.spec.node_name is None
    assert events_about(api, namespace, "orphan") == []  # not even a FailedScheduling


def gpunode(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GPUNode",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_gpunode_crd_from_manifests_installs_and_accepts_a_valid_object(
    api: Any, control_plane: ControlPlane
) -> None:
    crd_file = chart.CRDS / "gpunodes.mipart.io.yaml"
    control_plane.kubectl("apply", "-f", str(crd_file))  # again: apply is idempotent
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/gpunodes.mipart.io"
    )
    custom = kube.custom_objects(api)
    name = f"valid-{uuid.uuid4().hex[:6]}"
    spec = {
        "memoryPartition": "NPS1",
        "gpus": [{"index": 0, "computePartition": "CPX"}, {"index": 1, "drained": True}],
    }
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, gpunode(name, spec))
    try:
        status = {
            "memoryPartition": "NPS1",
            "gpuCount": 1,
            "partitionCount": 1,
            "freeMemory": "192Gi",
            "gpus": [
                {
                    "index": 0,
                    "computePartition": "SPX",
                    "memoryPartition": "NPS1",
                    "health": "Healthy",
                    "partitions": [
                        {
                            "id": "gpu0-p0",
                            "computeUnits": 304,
                            "memoryBytes": 206158430208,
                            "xcds": list(range(8)),
                            "memoryPool": 0,
                        }
                    ],
                }
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "LayoutApplied",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
        # status is a subresource: written through /status only, as the daemon will.
        custom.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, {"status": status})
        table = control_plane.kubectl("get", "gpunodes", name).stdout
        header, row = table.splitlines()[:2]
        assert header.split() == [
            "NAME",
            "MEMORY",
            "GPUS",
            "PARTITIONS",
            "FREE",
            "MEMORY",
            "READY",
            "AGE",
        ]
        assert row.split()[:6] == [name, "NPS1", "1", "1", "192Gi", "True"]
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


@pytest.mark.parametrize(
    ("spec", "field", "why"),
    [
        (
            {"gpus": [{"index": 0, "computePartition": "XPX"}]},
            "spec.gpus[0].computePartition",
            "Unsupported value",
        ),
        ({"memoryPartition": "NPS3"}, "spec.memoryPartition", "Unsupported value"),
        ({"gpus": [{"index": -1}]}, "spec.gpus[0].index", "should be greater than or equal to 0"),
        ({"gpus": [{"computePartition": "SPX"}]}, "spec.gpus[0].index", "Required value"),
    ],
)
def test_apiserver_rejects_a_gpunode_that_breaks_the_schema(
    api: Any, control_plane: ControlPlane, spec: dict[str, Any], field: str, why: str
) -> None:
    custom = kube.custom_objects(api)
    with pytest.raises(ApiException) as rejected:
        custom.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, gpunode(f"bad-{uuid.uuid4().hex[:6]}", spec)
        )

    assert rejected.value.status == 422
    message = json.loads(rejected.value.body or "{}")["message"]
    assert field in message
    assert why in message


def service_account_client(
    api: Any, control_plane: ControlPlane, namespace: str, name: str, tmp_path: Path
) -> Any:
    """A client authenticated as a service account, with a token from the TokenRequest API."""
    core = kube.core(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    path = kubeconfig.write(
        tmp_path / f"{name}.kubeconfig",
        server=control_plane.api_url,
        ca_cert=control_plane.ca_cert,
        user=name,
        token=token,
    )
    return control_plane.api_client(path)


def test_rbac_denies_a_service_account_what_it_was_not_granted(
    api: Any, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    reader = service_account_client(api, control_plane, namespace, "pod-reader", tmp_path)
    rbac = kube.rbac(api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "pod-reader", "namespace": namespace}],
        },
    )
    as_reader = kube.core(reader)

    # Granted: reading pods in its namespace (the binding may take a moment to be seen).
    wait_until(
        "pod-reader can list pods",
        lambda: as_reader.list_namespaced_pod(namespace) is not None,
        TIMEOUT,
    )

    # Not granted: writing pods, reading secrets, and anything cluster-scoped such as GPUNodes.
    denied: list[Callable[[], object]] = [
        lambda: as_reader.create_namespaced_pod(namespace, pod("sneaky")),
        lambda: as_reader.list_namespaced_secret(namespace),
        lambda: kube.custom_objects(reader).list_cluster_custom_object(GROUP, VERSION, PLURAL),
    ]
    for call in denied:
        with pytest.raises(ApiException) as forbidden:
            call()
        assert forbidden.value.status == 403
        assert f"system:serviceaccount:{namespace}:pod-reader" in (forbidden.value.body or "")


def test_apiserver_calls_a_validating_admission_webhook(
    api: Any, control_plane: ControlPlane, namespace: str
) -> None:
    core = kube.core(api)
    admission = kube.admission_registration(api)
    serving = control_plane.issue_serving_cert("test-webhook")
    with WebhookServer(serving) as server:
        config_name = f"test-deny-{namespace}"
        admission.create_validating_webhook_configuration({
            "metadata": {"name": config_name},
            "webhooks": [{
                "name": "deny.test.mipart.io",
                "clientConfig": {
                    "url": server.url,
                    "caBundle": base64.b64encode(control_plane.ca_cert.read_bytes()).decode(),
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["configmaps"]}],
                # Only this test's namespace, so that no other test meets the webhook.
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace}
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }],
        })  # fmt: skip
        try:
            attempts = iter(range(1_000_000))

            def denied() -> bool:
                # The apiserver picks up a new webhook configuration asynchronously.
                body = {"metadata": {"name": f"deny-{next(attempts)}", "labels": {DENY_LABEL: ""}}}
                try:
                    core.create_namespaced_config_map(namespace, body)
                except ApiException as exc:
                    return exc.status == 403 and "denied by test webhook" in (exc.body or "")
                return False

            wait_until("the webhook to deny a labelled ConfigMap", denied, TIMEOUT)
            # The same webhook lets the unlabelled one through.
            core.create_namespaced_config_map(namespace, {"metadata": {"name": "allowed"}})
        finally:
            admission.delete_validating_webhook_configuration(config_name)
