"""The webhook's answers for KServe InferenceServices: refused with the message each part's
pods would get, from the annotations KServe would give them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.cluster.http import BadRequest
from mipart.webhook.inferenceservices import pod_annotations, validate_inference_service
from mipart.webhook.mutate import Webhook


def service(
    annotations: dict[str, str] | None = None, **parts: dict[str, str] | None
) -> dict[str, Any]:
    spec = {part: {"annotations": a} if a else {} for part, a in parts.items()}
    return {
        "metadata": {"name": "qwen", "annotations": annotations or {}},
        "spec": spec or {"predictor": {}},
    }


def answer(obj: Any, operation: str = "CREATE") -> dict[str, Any]:
    body = {"request": {"uid": "u-1", "operation": operation, "object": obj}}
    response: dict[str, Any] = validate_inference_service(body)["response"]
    return response


def pod_message(annotations: dict[str, str]) -> str:
    """What the webhook tells a pod with these annotations."""
    pod = {"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "c"}]}}
    body = {"request": {"uid": "u-1", "operation": "CREATE", "object": pod}}
    message: str = Webhook().validate(body)["response"]["status"]["message"]
    return message


def test_the_predictors_annotations_win_over_the_services() -> None:
    obj = service({"mipart.io/model": "Qwen/Qwen2.5-7B", "team": "a"},
                  predictor={"mipart.io/model": "Qwen/Qwen2.5-32B-Instruct"})  # fmt: skip
    assert pod_annotations(obj) == {
        "predictor": {"mipart.io/model": "Qwen/Qwen2.5-32B-Instruct", "team": "a"}
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"mipart.io/memroy": "20Gi"},
        {"mipart.io/memory": "20Gi", "mipart.io/allocation": "{}"},
        {"mipart.io/memory": "20Gi", "mipart.io/planned-mode": "CPX"},
        {"mipart.io/qos": "batch"},
        {"mipart.io/memory": "20Gi", "mipart.io/qos": "Latency"},
    ],
)
@pytest.mark.parametrize("where", ["service", "predictor"])
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_a_bad_key_is_refused_with_the_pods_own_message(
    bad: dict[str, str], where: str, operation: str
) -> None:
    obj = service(bad) if where == "service" else service(predictor=bad)
    response = answer(obj, operation)
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert response["status"]["message"] == (
        f"the predictor's pods would be refused: {pod_message(bad)}"
    )


def test_each_part_is_checked_with_its_own_annotations() -> None:
    obj = service(predictor={"mipart.io/memory": "20Gi"}, transformer={"mipart.io/qos": "batch"})
    message = answer(obj)["status"]["message"]
    assert message.startswith("the transformer's pods would be refused: mipart.io/memory")
    assert "the predictor's" not in message


def test_the_services_own_keys_are_refused_when_they_would_reach_a_transformer() -> None:
    obj = service({"mipart.io/memory": "20Gi", "mipart.io/qos": "batch", "team": "a"},
                  predictor={}, transformer={"x": "y"})  # fmt: skip
    assert answer(obj)["status"]["message"] == (
        "metadata.annotations: mipart.io/memory, mipart.io/qos would reach the pods of the "
        "transformer too (KServe copies the InferenceService's annotations onto every part); "
        "put them on spec.predictor.annotations"
    )
    moved = service({"team": "a"}, predictor={"mipart.io/memory": "20Gi"}, explainer={"x": "y"})
    assert answer(moved)["allowed"] is True


@pytest.mark.parametrize(
    "obj",
    [
        service({"mipart.io/model": "Qwen/Qwen2.5-32B-Instruct"}),
        service(predictor={"mipart.io/memory": "20Gi", "mipart.io/qos": "latency"}),
        service({"team": "a"}),
        service(),
    ],
)
def test_good_or_no_mipart_annotations_are_allowed(obj: dict[str, Any]) -> None:
    assert answer(obj) == {"uid": "u-1", "allowed": True}


def test_a_delete_is_not_checked() -> None:
    assert answer(service({"mipart.io/memroy": "1"}), "DELETE")["allowed"] is True


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ([], "object"),
        ({"metadata": []}, "object.metadata"),
        ({"metadata": {"annotations": ["a"]}}, "object.metadata.annotations"),
        ({"spec": "x"}, "object.spec"),
        ({"spec": {"predictor": 3}}, "object.spec.predictor"),
        ({"spec": {"predictor": {"annotations": "x"}}}, "object.spec.predictor.annotations"),
    ],
)
def test_a_malformed_service_is_a_bad_request_naming_the_field(obj: Any, where: str) -> None:
    with pytest.raises(BadRequest, match=f"request.{where} must be"):
        answer(obj)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["metadata", "spec"]), json_values))
def test_fuzzed_services_never_crash(obj: dict[str, Any]) -> None:
    try:
        response = answer(obj)
    except BadRequest:
        return
    assert response["uid"] == "u-1"
