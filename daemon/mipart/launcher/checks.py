"""What mipart-vllm checks before it starts vLLM, beyond the fit: that the container holds the
partitions its pod was bound to, and serves the model its memory was sized for."""

from __future__ import annotations

from collections.abc import Mapping

from mipart.contract import environment
from mipart.contract.allocation import decode
from mipart.contract.annotations import ALLOCATION, MODEL
from mipart.contract.environment import AllocationError, ContainerAllocation
from mipart.geometry import format_bytes
from mipart.sizing import ModelSpec, UnknownModel, lookup, same_architecture


class ModelMismatch(ValueError):
    """The model served is not the one the pod's memory was sized for."""


def check_allocation(given: ContainerAllocation, env: Mapping[str, str]) -> None:
    """The device plugin's partitions and limit are the ones the extender bound the pod to.

    Both come from the pod's allocation, by two paths (the CDI spec the daemon wrote for the
    slot, and the annotation through the downward API); a difference means a hand-off went
    wrong, and starting would use a partition the pod does not hold. Outside a pod (a dry run)
    the annotation is absent and there is nothing to compare.
    """
    text = env.get(environment.ALLOCATION, "")
    if not text:
        return
    try:
        bound = decode(text, pod="this pod", pod_uid="")
    except ValueError as err:
        raise AllocationError(f"{environment.ALLOCATION} ({ALLOCATION}): {err}") from None
    if set(bound.partition_ids) != set(given.partitions):
        raise AllocationError(
            f"the container holds partitions {', '.join(given.partitions)} but the pod was bound "
            f"to {', '.join(bound.partition_ids)} ({ALLOCATION}); not starting on partitions "
            "the pod does not hold"
        )
    if bound.memory_bytes != given.memory_limit_bytes:
        raise AllocationError(
            f"the container's memory limit is {format_bytes(given.memory_limit_bytes)} per "
            f"partition but the pod was bound with {format_bytes(bound.memory_bytes)} "
            f"({ALLOCATION})"
        )


def check_model(served: str, spec: ModelSpec, env: Mapping[str, str]) -> str | None:
    """Refuse a model other than the one named in ``mipart.io/model``, unless it has the same
    architecture (a fine-tune or a local copy takes the same memory). Returns a note to print
    when the names differ but the shapes agree.

    A refusal rather than a warning: the pod's memory, and so its place on the node, was
    sized for the annotated model; serving another either wastes that memory or fails the fit
    check later with a less obvious message, and the fix is a one-line edit either way.
    """
    sized_for = env.get(environment.MODEL, "")
    if not sized_for or sized_for == served:
        return None
    try:
        expected = lookup(sized_for)
    except UnknownModel:
        # The webhook admits only catalogued names; an older catalogue in this image may not
        # know it, which is no reason to refuse.
        return f"{MODEL} {sized_for!r} is not in this launcher's catalog; not compared"
    if same_architecture(expected, spec):
        return f"serving {served}, which has the architecture of {sized_for} ({MODEL})"
    raise ModelMismatch(
        f"vllm serve {served}, but the pod's memory was sized for {sized_for} ({MODEL}); "
        f"serve {sized_for}, or set {MODEL} to the model you serve"
    )
