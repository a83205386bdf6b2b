"""Handles on the kubernetes client's API groups, for code that speaks in plain manifests.

The client accepts dicts wherever it takes a body (it serialises them as they are), but its
type hints admit only its model classes. Manifests here are dicts, as they are in YAML, so the
handles are typed Any rather than casting at every call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client, config

from mipart.contract.annotations import ALLOCATION
from mipart.contract.resources import GPUNODE_GROUP, GPUNODE_PLURAL, GPUNODE_VERSION


def new_client(kubeconfig: Path) -> Any:
    """A `kubernetes.client.ApiClient` for the identity in kubeconfig."""
    make: Any = config.new_client_from_config
    return make(config_file=str(kubeconfig))


def core(api: Any) -> Any:
    return client.CoreV1Api(api)


def apps(api: Any) -> Any:
    return client.AppsV1Api(api)


def custom_objects(api: Any) -> Any:
    return client.CustomObjectsApi(api)


def coordination(api: Any) -> Any:
    return client.CoordinationV1Api(api)


def events(api: Any) -> Any:
    return client.EventsV1Api(api)


def rbac(api: Any) -> Any:
    return client.RbacAuthorizationV1Api(api)


def admission_registration(api: Any) -> Any:
    return client.AdmissionregistrationV1Api(api)


GPUNODES = (GPUNODE_GROUP, GPUNODE_VERSION, GPUNODE_PLURAL)


def gpunode(api: Any, name: str) -> dict[str, Any]:
    """The GPUNode ``name`` as a dict, or {} while it does not exist."""
    try:
        return dict(custom_objects(api).get_cluster_custom_object(*GPUNODES, name))
    except client.ApiException as err:
        if err.status == 404:
            return {}
        raise


def policy(api: Any) -> Any:
    return client.PolicyV1Api(api)


def allocation(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """A pod's allocation (the mipart.io/allocation annotation, decoded) once it is bound."""
    pod = core(api).read_namespaced_pod(name, namespace)
    text = (pod.metadata.annotations or {}).get(ALLOCATION)
    decoded: dict[str, Any] | None = json.loads(text) if text and pod.spec.node_name else None
    return decoded


def bound_pod(
    name: str,
    node: str,
    partitions: list[str],
    memory_bytes: int,
    *,
    containers: tuple[str, ...] = ("c",),
    scheduler_name: str | None = None,
) -> dict[str, Any]:
    """A pod already bound with an allocation, as the extender leaves one: spec.nodeName and
    the mipart.io/allocation annotation together."""
    allocation = {
        "v": 1,
        "node": node,
        "partitions": partitions,
        "memoryBytes": memory_bytes,
        "sharing": "shared",
    }
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{"name": c, "image": "vllm"} for c in containers],
    }
    if scheduler_name is not None:
        spec["schedulerName"] = scheduler_name
    return {
        "metadata": {"name": name, "annotations": {ALLOCATION: json.dumps(allocation)}},
        "spec": spec,
    }
