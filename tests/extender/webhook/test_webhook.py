"""The admission webhook's answers to AdmissionReviews, as the API server sends them."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.cluster.http import BadRequest
from mipart.webhook.mutate import Webhook

hook = Webhook()


def review(pod: dict[str, Any], operation: str = "CREATE", old: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": operation, "object": pod, "oldObject": old},
    }


def pod(annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": [{"name": "vllm", "image": "vllm"}], **spec},
    }


def test_mutation_sets_scheduler_resource_and_environment() -> None:
    original = pod({"mipart.io/memory": "20Gi", "mipart.io/partitions": "2"})
    answer = hook.mutate(review(original))["response"]
    assert answer["allowed"] is True
    assert answer["uid"] == "u-1"
    patch = json.loads(base64.b64decode(answer["patch"]))
    mutated = jsonpatch.apply_patch(original, patch)
    assert mutated["spec"]["schedulerName"] == "mipart-scheduler"
    resources = mutated["spec"]["containers"][0]["resources"]
    assert resources["requests"]["mipart.io/partition"] == "2"
    assert resources["limits"]["mipart.io/partition"] == "2"
    env = {e["name"]: e for e in mutated["spec"]["containers"][0]["env"]}
    assert env["MIPART_ALLOCATION"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['mipart.io/allocation']"
    )


def test_existing_resources_and_env_are_kept() -> None:
    original = pod({"mipart.io/memory": "8Gi"})
    original["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "4"}}
    original["spec"]["containers"][0]["env"] = [{"name": "HF_HOME", "value": "/models"}]
    patch = json.loads(base64.b64decode(hook.mutate(review(original))["response"]["patch"]))
    mutated = jsonpatch.apply_patch(original, patch)
    container = mutated["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "4", "mipart.io/partition": "1"}
    assert container["env"][0]["name"] == "HF_HOME"


@pytest.mark.parametrize(
    ("annotations", "spec", "expected"),
    [
        ({"mipart.io/memory": "lots"}, {}, "mipart.io/memory: 'lots' is not valid"),
        ({"mipart.io/memory": "8Gi", "mipart.io/allocation": "{}"}, {},
         "mipart.io/allocation: set only by the mipart extender"),
        ({"mipart.io/memory": "8Gi"}, {"schedulerName": "other"},
         "spec.schedulerName: 'other' would bypass mipart"),
        # Any mipart.io/ key makes the pod mipart's: a typo or a partial set is refused, not
        # run without a partition.
        ({"mipart.io/memroy": "20Gi"}, {}, "mipart.io/memroy: unknown annotation"),
        ({"mipart.io/qos": "batch"}, {}, "mipart.io/memory / mipart.io/model: give exactly one"),
        # Values are matched exactly, case included (docs/annotations.md).
        ({"mipart.io/memory": "8Gi", "mipart.io/partition-mode": "qpx"}, {},
         "mipart.io/partition-mode: 'qpx' is not valid; allowed: any, SPX, DPX, QPX or CPX"),
    ],
)  # fmt: skip
def test_refusals(annotations: dict[str, str], spec: dict[str, Any], expected: str) -> None:
    for verb in (hook.mutate, hook.validate):
        answer = verb(review(pod(annotations, **spec)))["response"]
        assert answer["allowed"] is False
        assert expected in answer["status"]["message"]
        assert answer["status"]["code"] == 422


def test_pods_without_our_annotations_pass_untouched() -> None:
    answer = hook.mutate(review(pod({"team": "a"})))["response"]
    assert answer == {"uid": "u-1", "allowed": True}


def test_malformed_reviews_are_bad_requests() -> None:
    for body in (None, [], {"request": None}, {"request": {"operation": "CREATE"}}):
        with pytest.raises(BadRequest):
            hook.mutate(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["uid", "operation", "object", "oldObject"]), json_values))
def test_fuzzed_requests_never_crash(request: dict[str, Any]) -> None:
    for verb in (hook.mutate, hook.validate):
        try:
            answer = verb({"request": request})
        except BadRequest:
            continue
        assert "response" in answer


def test_queued_pods_get_the_gate_and_their_class_priority() -> None:
    body = pod({"mipart.io/memory": "8Gi", "mipart.io/qos": "batch", "mipart.io/queue": "true"})
    body["spec"]["priority"] = 0  # what the Priority admission plugin left before webhooks
    response = Webhook().mutate(review(body))["response"]
    patched = jsonpatch.apply_patch(body, json.loads(base64.b64decode(response["patch"])))
    assert patched["spec"]["schedulingGates"] == [{"name": "mipart.io/queue"}]
    assert patched["spec"]["priorityClassName"] == "mipart-batch"
    assert (patched["spec"]["priority"], patched["spec"]["preemptionPolicy"]) == (1000, "Never")


def test_users_cannot_plan_their_own_mode() -> None:
    body = pod({"mipart.io/memory": "8Gi", "mipart.io/planned-mode": "SPX"})
    answer = hook.validate(review(body))["response"]
    assert answer["allowed"] is False
    assert "mipart.io/planned-mode: set only by mipart-controller" in answer["status"]["message"]


def test_users_cannot_hold_their_own_partitions() -> None:
    hold = '{"v":1,"node":"n1","partitions":["gpu0-spx-0"],"expires":"2099-01-01T00:00:00Z"}'
    for body in (
        pod({"mipart.io/memory": "8Gi", "mipart.io/planned-partitions": hold}),
        pod({"mipart.io/memory": "8Gi", "mipart.io/planned-partitions": "gpu0-spx-0"}),
    ):
        answer = hook.validate(review(body))["response"]
        assert answer["allowed"] is False
        message = answer["status"]["message"]
        assert "mipart.io/planned-partitions: set only by mipart-controller" in message
        assert "unknown annotation" not in message
