"""Admission webhook for pods: turns ``mipart.io/*`` annotations into what the scheduler and
the node need, and refuses bad ones with a message that names the annotation, the value and
what is allowed (the API server shows it to the user as the reason the pod was refused).

- mutate (CREATE): spec.schedulerName, the ``mipart.io/partition`` request on the first
  container (extended resources need requests == limits), the launcher's environment;
- validate (CREATE): the same checks once every mutating webhook ran; nobody but the
  extender's Binding sets ``mipart.io/allocation`` (a pod cannot claim a partition by
  annotating itself).

Every pod with a ``mipart.io/`` key is checked, not only those that name their memory or
model: a typo-only pod (``mipart.io/memroy``) or one with only ``mipart.io/qos`` is refused,
not run without a partition. What needs no parser (direct resource requests, sidecars, preset
nodes, updates) the API server checks itself, with the chart's admission policies.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from mipart.cluster.annotations import AnnotationError, is_queued, names_mipart, parse_request
from mipart.cluster.http import BadRequest
from mipart.contract import environment
from mipart.contract.annotations import (
    ALLOCATION,
    MODEL,
    PARTITION_MODE,
    PLANNED_MODE,
    PLANNED_PARTITIONS,
    QOS,
    QUEUE,
)
from mipart.contract.resources import PARTITION_RESOURCE, QUEUE_GATE
from mipart.placement import PartitionRequest, QosClass

# PriorityClass per QoS class: the chart (manifests/charts/mipart/templates/priorityclasses.yaml)
# defines the same (tests/integration/test_chart.py checks).
# Only latency may preempt; the values leave room for a cluster's own classes around them.
PRIORITY_CLASSES: dict[QosClass, tuple[str, int, str]] = {
    QosClass.LATENCY: ("mipart-latency", 100_000, "PreemptLowerPriority"),
    QosClass.STANDARD: ("mipart-standard", 10_000, "Never"),
    QosClass.BATCH: ("mipart-batch", 1_000, "Never"),
}


@dataclass(frozen=True)
class Webhook:
    scheduler_name: str = "mipart-scheduler"

    def mutate(self, body: Any) -> dict[str, Any]:
        request = request_of(body)
        pod, annotations = _pod(request, "object")
        if request.get("operation") != "CREATE" or not names_mipart(annotations):
            return review(request, allowed=True)
        # Parsed (and sized) once per call: the checks and the patch share the answer.
        asked, problems = _checked(pod, annotations, scheduler=self.scheduler_name)
        if asked is None or problems:
            return review(request, allowed=False, message=problems)
        patch = _patch(pod, annotations, asked, self.scheduler_name)
        return review(request, allowed=True, patch=patch)

    def validate(self, body: Any) -> dict[str, Any]:
        """The same checks after every mutating webhook ran: another one may have changed
        the pod after ours. (Updates are the admission policies' part: the API server checks
        them itself, pods/status included; the chart's admission-policy.yaml.)"""
        request = request_of(body)
        pod, annotations = _pod(request, "object")
        if request.get("operation") != "CREATE" or not names_mipart(annotations):
            return review(request, allowed=True)
        _, problems = _checked(pod, annotations, scheduler=self.scheduler_name)
        return review(request, allowed=not problems, message=problems)


def request_of(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise BadRequest("expected an admission.k8s.io/v1 AdmissionReview with a 'request'")
    request: dict[str, Any] = body["request"]
    if not isinstance(request.get("uid"), str):
        raise BadRequest("AdmissionReview.request.uid must be a string")
    return request


def _pod(request: dict[str, Any], field: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The pod in ``request[field]`` and its annotations; BadRequest if it is not pod-shaped."""
    pod = request.get(field) or {}
    if not isinstance(pod, dict):
        raise BadRequest(f"AdmissionReview.request.{field} must be an object")
    for part in ("metadata", "spec"):
        if not isinstance(pod.get(part) or {}, dict):
            raise BadRequest(f"AdmissionReview.request.{field}.{part} must be an object")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadRequest(f"AdmissionReview.request.{field}.metadata.annotations must be a map")
    containers = (pod.get("spec") or {}).get("containers") or []
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise BadRequest(f"AdmissionReview.request.{field}.spec.containers must be a list")
    return pod, {str(k): str(v) for k, v in annotations.items()}


def annotation_problems(annotations: dict[str, str]) -> tuple[PartitionRequest | None, list[str]]:
    """What a set of ``mipart.io/`` annotations asks for (None if they are bad), and every
    problem with them: the checks a pod's annotations and an InferenceService's (which KServe
    copies onto its pods) both get."""
    problems: list[str] = []
    asked: PartitionRequest | None = None
    if ALLOCATION in annotations:
        problems.append(f"{ALLOCATION}: set only by the mipart extender when it binds the pod")
    if PLANNED_MODE in annotations:
        problems.append(
            f"{PLANNED_MODE}: set only by mipart-controller when it releases the pod; "
            f"ask for a mode with {PARTITION_MODE}"
        )
    if PLANNED_PARTITIONS in annotations:
        problems.append(
            f"{PLANNED_PARTITIONS}: set only by mipart-controller when it releases the pod"
        )
    try:
        asked = parse_request(annotations)
    except AnnotationError as err:
        problems.extend(err.problems)
    return asked, problems


def _checked(
    pod: dict[str, Any], annotations: dict[str, str], *, scheduler: str
) -> tuple[PartitionRequest | None, str]:
    """The request a pod being created asks for (None if its annotations are bad), and every
    problem with the pod, joined for the AdmissionReview's message ("" if none)."""
    asked, problems = annotation_problems(annotations)
    chosen = (pod.get("spec") or {}).get("schedulerName")
    if chosen not in (None, "", "default-scheduler", scheduler):
        problems.append(
            f"spec.schedulerName: {chosen!r} would bypass mipart; leave it unset or "
            f"use {scheduler!r}"
        )
    chosen_class = (pod.get("spec") or {}).get("priorityClassName")
    if asked is not None and is_queued(annotations) and chosen_class and not problems:
        ours = PRIORITY_CLASSES[asked.qos][0]
        if chosen_class != ours:
            problems.append(
                f"spec.priorityClassName: {chosen_class!r} contradicts {QUEUE}: the queue "
                f"gives {QOS} class {ours!r}; leave it unset"
            )
    if not (pod.get("spec") or {}).get("containers"):
        problems.append("spec.containers: a pod needs a container to give the partition to")
    return asked, "; ".join(problems)


def _patch(
    pod: dict[str, Any], annotations: dict[str, str], asked: PartitionRequest, scheduler: str
) -> list[Any]:
    partitions = str(asked.partitions)
    container = pod["spec"]["containers"][0]
    resources = container.get("resources") or {}
    if not isinstance(resources, dict):
        resources = {}
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/schedulerName", "value": scheduler},
    ]
    if "resources" not in container:
        ops.append({"op": "add", "path": "/spec/containers/0/resources", "value": {}})
    for kind in ("requests", "limits"):
        if kind not in resources:
            ops.append({"op": "add", "path": f"/spec/containers/0/resources/{kind}", "value": {}})
        ops.append(
            {
                "op": "add",
                "path": f"/spec/containers/0/resources/{kind}/{_escape(PARTITION_RESOURCE)}",
                "value": partitions,
            }
        )
    if is_queued(annotations):
        ops.extend(_queue_ops(pod, asked.qos))
    env = container.get("env")
    launcher_env = [
        # The allocation lands on the pod at bind; mipart-vllm checks that the partitions the
        # device plugin gave the container are the ones it names. (The partitions, their
        # memory and pools come from the device plugin's CDI spec.)
        environment.annotation_env(environment.ALLOCATION, ALLOCATION),
        # The model the pod's memory was sized for; mipart-vllm refuses to serve another.
        environment.annotation_env(environment.MODEL, MODEL),
    ]
    if env is None:
        ops.append({"op": "add", "path": "/spec/containers/0/env", "value": launcher_env})
    else:
        ops.extend(
            {"op": "add", "path": "/spec/containers/0/env/-", "value": v} for v in launcher_env
        )
    return ops


def _queue_ops(pod: dict[str, Any], qos: QosClass) -> list[dict[str, Any]]:
    """Hold the pod behind the queue gate, with its class's priority. The Priority admission
    plugin resolved the class before webhooks ran and checks the result after them, so the
    value and the preemption policy it would have resolved are set too."""
    name, value, preemption = PRIORITY_CLASSES[qos]
    gate = {"name": QUEUE_GATE}
    spec = pod.get("spec") or {}
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/priorityClassName", "value": name},
        {"op": "add", "path": "/spec/priority", "value": value},
        {"op": "add", "path": "/spec/preemptionPolicy", "value": preemption},
    ]
    if spec.get("schedulingGates"):
        ops.append({"op": "add", "path": "/spec/schedulingGates/-", "value": gate})
    else:
        ops.append({"op": "add", "path": "/spec/schedulingGates", "value": [gate]})
    return ops


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def review(
    request: dict[str, Any], *, allowed: bool, message: str = "", patch: list[Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 422, "reason": "Invalid", "message": message}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
