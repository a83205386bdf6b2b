"""InferenceServices a test makes in its namespace, through KServe's real controller
(hack/devcluster/kserve.py), and their pods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hack.devcluster import kube
from hack.devcluster.kserve import INFERENCESERVICES
from hack.devcluster.procs import wait_until
from mipart.contract.kserve import (
    INFERENCESERVICE_API_VERSION,
    INFERENCESERVICE_KIND,
    INFERENCESERVICE_LABEL,
    INFERENCESERVICE_PLURAL,
)


class Services:
    """The test's InferenceServices in its namespace, and their pods."""

    def __init__(self, api: Any, namespace: str, workdir: Path) -> None:
        self.api = api
        self.namespace = namespace
        self.workdir = workdir
        self.objects = kube.custom_objects(api)

    def manifest(
        self,
        name: str,
        annotations: dict[str, str] | None = None,
        predictor: dict[str, str] | None = None,
        replicas: int = 1,
        model: dict[str, Any] | None = None,
        container: dict[str, Any] | None = None,
        pod: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An InferenceService with a container of its own (``container`` adds to it), or
        ``model`` (a runtime's); ``pod``: more of the predictor's pod spec."""
        own = {"name": "kserve-container", "image": "vllm/vllm-openai", **(container or {})}
        serving: dict[str, Any] = {"model": model} if model is not None else {"containers": [own]}
        return {
            "apiVersion": INFERENCESERVICE_API_VERSION,
            "kind": INFERENCESERVICE_KIND,
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {
                "predictor": {
                    "annotations": predictor or {},
                    "minReplicas": replicas,
                    "maxReplicas": replicas,
                    **serving,
                    **(pod or {}),
                }
            },
        }

    def write(self, manifest: dict[str, Any]) -> Path:
        path = self.workdir / f"{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        return path

    def create(self, manifest: dict[str, Any]) -> None:
        self.objects.create_namespaced_custom_object(
            *INFERENCESERVICES, self.namespace, INFERENCESERVICE_PLURAL, manifest
        )

    def scale(self, name: str, replicas: int) -> None:
        patch = {"spec": {"predictor": {"minReplicas": replicas, "maxReplicas": replicas}}}
        self.objects.patch_namespaced_custom_object(
            *INFERENCESERVICES, self.namespace, INFERENCESERVICE_PLURAL, name, patch
        )

    def pods(self, name: str) -> list[dict[str, Any]]:
        """The live pods of InferenceService ``name`` (not those being deleted)."""
        listing = kube.core(self.api).list_namespaced_pod(
            self.namespace, label_selector=f"{INFERENCESERVICE_LABEL}={name}",
            _preload_content=False,
        )  # fmt: skip
        items = json.loads(listing.data)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def bound(self, name: str, count: int) -> list[dict[str, Any]]:
        """Waits until ``count`` live pods of ``name`` are bound (and no other is live)."""

        def ready() -> bool:
            live = self.pods(name)
            return len(live) == count and all(p["spec"].get("nodeName") for p in live)

        wait_until(f"{count} pod(s) of {name} bound", ready, timeout=120)
        return self.pods(name)

    def delete_all(self) -> None:
        for item in self.objects.list_namespaced_custom_object(
            *INFERENCESERVICES, self.namespace, INFERENCESERVICE_PLURAL
        )["items"]:
            self.objects.delete_namespaced_custom_object(
                *INFERENCESERVICES, self.namespace, INFERENCESERVICE_PLURAL,
                item["metadata"]["name"],
            )  # fmt: skip
        # The Deployments go with them (owned); the namespace's clean-up then finds no
        # controller making pods again.
        wait_until(
            "the InferenceServices' Deployments gone",
            lambda: not kube.apps(self.api).list_namespaced_deployment(self.namespace).items,
            timeout=60,
        )
