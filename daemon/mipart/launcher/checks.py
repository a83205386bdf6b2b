"""What mipart-vllm checks before it starts vLLM: that the container holds the partitions its
pod was bound to, that its memory limit fits those partitions by the placement engine's rule,
and that it serves the model its memory was sized for."""

from __future__ import annotations

from collections.abc import Mapping

from mipart.contract import environment
from mipart.contract.allocation import decode
from mipart.contract.annotations import ALLOCATION, MODEL
from mipart.contract.environment import AllocationError, ContainerAllocation
from mipart.geometry import Rounding, format_bytes
from mipart.placement import instance_budget
from mipart.sizing import ModelSpec, UnknownModel, lookup, same_architecture


class ModelMismatch(ValueError):
    """The model served is not the one the pod's memory was sized for."""


class LimitAboveBudget(ValueError):
    """The allocation's memory limit is more than one instance may have on its partitions."""

    def __init__(self, message: str, limit_bytes: int, budget_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes
        self.budget_bytes = budget_bytes


def check_fit(given: ContainerAllocation) -> None:
    """The memory limit fits each partition by the one usable-memory rule: at most
    ``mipart.placement.instance_budget`` of the partition's memory, the most the placement
    engine gives one instance, exclusive or shared. The rest stays outside vLLM's
    ``--gpu-memory-utilization`` budget for what every instance allocates before vLLM's
    memory snapshot: the HIP context, RCCL communicators, hipBLASLt handles
    (docs/facts-vllm.md#memory-outside-the-budget).

    A limit above it means placement broke the rule; the launcher refuses, naming both
    numbers, rather than cap vLLM's budget below the limit the pod was placed with. Raises
    LimitAboveBudget.
    """
    limit, partition = given.memory_limit_bytes, given.partition_memory_bytes
    budget = instance_budget(partition)
    if limit <= budget:
        return
    outside = partition - budget
    raise LimitAboveBudget(
        f"the memory limit is {format_bytes(limit, Rounding.UP)} ({limit} B) per partition, "
        f"but one vLLM instance may have at most {format_bytes(max(budget, 0), Rounding.DOWN)} "
        f"({max(budget, 0)} B) of a {format_bytes(partition, Rounding.DOWN)} partition: "
        f"{format_bytes(outside)} stays outside vLLM's budget for the HIP context, RCCL and "
        "hipBLASLt (mipart.placement.instance_budget). The placement that gave this limit "
        "broke that rule; not starting",
        limit,
        budget,
    )


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
