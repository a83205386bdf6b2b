"""The InferenceService reference a queued KServe pod's Event goes on: read once per
InferenceService and kept a while, None for a plain pod or one whose service cannot be read."""

from __future__ import annotations

from typing import Any, cast

from mipart.controller.kserve import InferenceServices
from mipart.kube.api import KubeApi, KubeError


class Api:
    def __init__(self, uids: dict[str, str], refuse: int | None = None) -> None:
        self.uids = uids
        self.refuse = refuse
        self.paths: list[str] = []

    def get(self, path: str, **query: str) -> Any:
        self.paths.append(path)
        if self.refuse is not None:
            raise KubeError(self.refuse, "Forbidden", "{}")
        return {"metadata": {"uid": self.uids[path.rsplit("/", 1)[1]]}}


def pod(service: str | None, namespace: str = "serving") -> dict[str, Any]:
    labels = {} if service is None else {"serving.kserve.io/inferenceservice": service}
    return {"metadata": {"name": "p", "namespace": namespace, "labels": labels}}


def resolver(api: Api, keep_s: float = 60.0) -> InferenceServices:
    return InferenceServices(cast(KubeApi, api), keep_s=keep_s)


def test_a_kserve_pod_gets_its_services_reference_read_once() -> None:
    api = Api({"chat": "u-1"})
    services = resolver(api)
    expected = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "name": "chat",
        "namespace": "serving",
        "uid": "u-1",
    }
    assert services.of(pod("chat")) == expected
    assert services.of(pod("chat")) == expected
    assert api.paths == [
        "/apis/serving.kserve.io/v1beta1/namespaces/serving/inferenceservices/chat"
    ]
    assert services.of(pod(None)) is None
    assert len(api.paths) == 1


def test_after_its_keep_time_the_service_is_read_again() -> None:
    api = Api({"chat": "u-1"})
    services = resolver(api, keep_s=0.0)
    services.of(pod("chat"))
    api.uids["chat"] = "u-2"  # re-created
    reference = services.of(pod("chat"))
    assert reference is not None
    assert reference["uid"] == "u-2"


def test_an_unreadable_service_gives_none() -> None:
    services = resolver(Api({}, refuse=403))
    assert services.of(pod("chat")) is None
