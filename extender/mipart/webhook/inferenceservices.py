"""Admission of KServe InferenceServices that carry ``mipart.io/`` annotations.

KServe copies an InferenceService's annotations, merged with those of each part
(``spec.predictor.annotations``, the part's own winning), onto the pods of that part. A bad
key would be copied too, and the webhook would then refuse every pod the ReplicaSet makes,
where the user does not look. So the InferenceService itself is refused, at ``kubectl
apply``, with the message each pod would get. mipart keys on the InferenceService's own
metadata are refused when it has a transformer or an explainer: those pods would get them too.
"""

from __future__ import annotations

from typing import Any

from mipart.cluster.annotations import names_mipart
from mipart.cluster.http import BadRequest
from mipart.contract.annotations import PREFIX
from mipart.contract.kserve import COMPONENTS
from mipart.webhook.mutate import annotation_problems, request_of, review


def validate_inference_service(body: Any) -> dict[str, Any]:
    request = request_of(body)
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return review(request, allowed=True)
    problems: list[str] = []
    parts = pod_annotations(request.get("object"))
    metadata = _map(request["object"].get("metadata"), "metadata")
    own = sorted(key for key in metadata if key.startswith(PREFIX))
    others = [part for part in parts if part != "predictor"]
    if own and others:
        # A transformer or explainer would become a mipart pod too, sized for the model.
        problems.append(
            f"metadata.annotations: {', '.join(own)} would reach the pods of the "
            f"{' and the '.join(others)} too (KServe copies the InferenceService's annotations "
            "onto every part); put them on spec.predictor.annotations"
        )
    for part, given in parts.items():
        if not names_mipart(given):
            continue
        _, found = annotation_problems(given)
        if found:
            problems.append(f"the {part}'s pods would be refused: {'; '.join(found)}")
    return review(request, allowed=not problems, message="; ".join(problems))


def pod_annotations(service: Any) -> dict[str, dict[str, str]]:
    """The annotations each part's pods get, by part, for the parts the InferenceService has."""
    if not isinstance(service, dict):
        raise BadRequest("AdmissionReview.request.object must be an object")
    own = _map(service.get("metadata"), "metadata")
    spec = service.get("spec") or {}
    if not isinstance(spec, dict):
        raise BadRequest("AdmissionReview.request.object.spec must be an object")
    parts: dict[str, dict[str, str]] = {}
    for part in COMPONENTS:
        if spec.get(part) is None:
            continue
        parts[part] = {**own, **_map(spec[part], f"spec.{part}")}
    return parts


def _map(holder: Any, where: str) -> dict[str, str]:
    """``holder.annotations`` as strings; BadRequest if the shape is not an object's."""
    if holder is None:
        return {}
    if not isinstance(holder, dict):
        raise BadRequest(f"AdmissionReview.request.object.{where} must be an object")
    annotations = holder.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadRequest(f"AdmissionReview.request.object.{where}.annotations must be a map")
    return {str(k): str(v) for k, v in annotations.items()}
