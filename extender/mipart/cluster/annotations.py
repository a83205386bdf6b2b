"""The user's surface: ``mipart.io/*`` annotations on a pod (or an InferenceService's
predictor), validated into a PartitionRequest. Every refusal names the annotation, the value
and what is allowed; unknown ``mipart.io/`` keys are refused, not ignored (a typo such as
``mipart.io/memroy`` would otherwise schedule a pod with no memory limit)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mipart.contract import planned_partitions
from mipart.contract.annotations import (
    ALLOCATION,
    MEMORY,
    MODEL,
    PARTITION_MODE,
    PARTITIONS,
    PLANNED_MODE,
    PLANNED_PARTITIONS,
    PREFIX,
    QOS,
    QUEUE,
    SHARING,
    USER_ANNOTATIONS,
)
from mipart.contract.planned_partitions import InvalidHold, PlannedPartitions
from mipart.geometry import GPU_MEMORY_BYTES, ComputeMode, Rounding, format_bytes, parse_bytes
from mipart.placement import PartitionRequest, QosClass, Sharing, instance_budget
from mipart.sizing import InvalidSizing, UnknownModel, estimate, lookup

# A model named without a memory figure is sized for this context, in bf16 (docs/annotations.md).
MODEL_CONTEXT_TOKENS = 8192

_ALLOWED = {
    MEMORY: "a byte quantity such as 20Gi, 512Mi or 40G, per replica, greater than 0",
    MODEL: "a known model name (see docs/annotations.md)",
    PARTITIONS: "1, 2, 4 or 8 (tensor-parallel partitions per replica)",
    PARTITION_MODE: "any, SPX, DPX, QPX or CPX",
    QOS: "latency, standard or batch",
    SHARING: "shared or exclusive",
    QUEUE: '"true" (wait in the QoS queue of mipart-controller) or "false"',
}


class AnnotationError(ValueError):
    """One or more bad annotations; ``str()`` lists each with its value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# Written by mipart processes, not by users: not "unknown", and each read on its own.
_MIPART_WRITTEN = (ALLOCATION, PLANNED_MODE, PLANNED_PARTITIONS)


@dataclass(frozen=True, slots=True)
class ParsedPod:
    """What a pod's annotations ask of placement: its request (held to its planned mode, if
    mipart-controller wrote one) and where the re-partition planner holds it, if anywhere
    (``mipart.io/planned-partitions``, expired or not: ``hold_at`` says)."""

    request: PartitionRequest
    hold: PlannedPartitions | None = None
    # The request as the pod's own annotations ask it, without the planned mode: what a pod
    # whose hold was waived is placed by (the plan's capacity is out of reach).
    unplanned: PartitionRequest | None = None

    def without_plan(self) -> PartitionRequest:
        return self.unplanned or self.request

    def hold_at(self, now: datetime) -> PlannedPartitions | None:
        """The hold, if it still stands at ``now`` (timezone-aware); after it expires the pod
        is placed like any other of its planned mode."""
        hold = self.hold
        return hold if hold is not None and hold.holds_at(now) else None


class _Annotations(BaseModel):
    model_config = ConfigDict(populate_by_name=False, extra="forbid", frozen=True)

    memory: Annotated[int | None, Field(alias=MEMORY)] = None
    model: Annotated[str | None, Field(alias=MODEL, min_length=1)] = None
    partitions: Annotated[Literal[1, 2, 4, 8], Field(alias=PARTITIONS)] = 1
    partition_mode: Annotated[
        Literal["any", "SPX", "DPX", "QPX", "CPX"], Field(alias=PARTITION_MODE)
    ] = "any"
    qos: Annotated[QosClass, Field(alias=QOS)] = QosClass.STANDARD
    sharing: Annotated[Sharing, Field(alias=SHARING)] = Sharing.SHARED
    queue: Annotated[Literal["true", "false"], Field(alias=QUEUE)] = "false"

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int | None:
        if value is None:
            return None
        size = parse_bytes(str(value))
        if size <= 0:
            raise ValueError("must be greater than 0")
        return size

    @field_validator("partitions", mode="before")
    @classmethod
    def _partitions(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def is_managed(annotations: Mapping[str, str] | None) -> bool:
    """A pod opts in by naming its memory or its model."""
    return annotations is not None and (MEMORY in annotations or MODEL in annotations)


def names_mipart(annotations: Mapping[str, str]) -> bool:
    """Any ``mipart.io/`` key at all: such a pod is checked, so a typo or a partial set of
    annotations is refused instead of running without a partition."""
    return any(key.startswith(PREFIX) for key in annotations)


def qos_of(annotations: Mapping[str, str]) -> QosClass:
    """The pod's QoS class: standard when it names none (or one that no longer parses). It
    decides what a latency pod may preempt, so it is read without refusing anything."""
    try:
        return QosClass(annotations.get(QOS, QosClass.STANDARD.value))
    except ValueError:
        return QosClass.STANDARD


def is_queued(annotations: Mapping[str, str]) -> bool:
    """A pod opts in to the QoS queue with ``mipart.io/queue: "true"`` (validated by
    parse_request like every other annotation)."""
    return annotations.get(QUEUE) == "true"


def parse_request(annotations: Mapping[str, str]) -> PartitionRequest:
    """The PartitionRequest a pod's annotations ask for; AnnotationError if any is bad."""
    return parse_pod(annotations).request


def parse_pod(annotations: Mapping[str, str]) -> ParsedPod:
    """The request and the planner's hold a pod's annotations carry; AnnotationError if any
    is bad (a malformed hold too: only mipart-controller writes it, and the webhook refuses it
    from anyone else at creation)."""
    ours = {
        k: v for k, v in annotations.items() if k.startswith(PREFIX) and k not in _MIPART_WRITTEN
    }
    problems = [
        f"{key}: unknown annotation; known: {', '.join(USER_ANNOTATIONS)}"
        for key in sorted(ours)
        if key not in USER_ANNOTATIONS
    ]
    known = {k: v for k, v in ours.items() if k in USER_ANNOTATIONS}
    hold: PlannedPartitions | None = None
    text = annotations.get(PLANNED_PARTITIONS)
    if text is not None:
        try:
            hold = planned_partitions.decode(text)
        except InvalidHold as err:
            problems.append(str(err))
    try:
        parsed = _Annotations.model_validate(known)
    except ValidationError as err:
        for e in err.errors():
            key = str(e["loc"][0]) if e["loc"] else "?"
            problems.append(f"{key}: {known.get(key)!r} is not valid; allowed: {_ALLOWED[key]}")
        raise AnnotationError(problems) from None
    if problems:
        raise AnnotationError(problems)
    own = request = _to_request(parsed)
    planned = annotations.get(PLANNED_MODE)
    if planned is not None and request.compute_mode is None:
        try:
            request = replace(request, compute_mode=ComputeMode(planned))
        except ValueError:
            raise AnnotationError(
                [f"{PLANNED_MODE}: {planned!r} is not valid; allowed: SPX, DPX, QPX or CPX"]
            ) from None
    return ParsedPod(request, hold, own)


def _to_request(parsed: _Annotations) -> PartitionRequest:
    if (parsed.memory is None) == (parsed.model is None):
        raise AnnotationError(
            [
                f"{MEMORY} / {MODEL}: give exactly one: the memory per replica, or a model to "
                "estimate it from"
            ]
        )
    if parsed.memory is not None:
        per_partition = -(-parsed.memory // parsed.partitions)
    else:
        assert parsed.model is not None
        try:
            spec = lookup(parsed.model)
            per_partition = estimate(
                spec,
                max_model_len=min(MODEL_CONTEXT_TOKENS, spec.max_context),
                tensor_parallel=parsed.partitions,
            ).per_partition_bytes
        except (UnknownModel, InvalidSizing) as err:
            raise AnnotationError([f"{MODEL}: {parsed.model!r}: {err}"]) from None
    mode = None if parsed.partition_mode == "any" else ComputeMode(parsed.partition_mode)
    _check_fits_some_partition(per_partition, mode, parsed)
    return PartitionRequest(
        memory_bytes=per_partition,
        partitions=parsed.partitions,
        compute_mode=mode,
        qos=parsed.qos,
        sharing=parsed.sharing,
    )


def _check_fits_some_partition(
    per_partition: int, mode: ComputeMode | None, parsed: _Annotations
) -> None:
    """Refuse at admission what no partition of any node could ever hold, instead of leaving
    the pod Pending forever: a limit above what one instance may have on an empty partition of
    the largest mode allowed (``instance_budget``, the placement engine's own rule, exclusive
    or shared). A CPX partition is 24574Mi, of which an instance may have 23574Mi, so "23.5Gi"
    on CPX can never run."""
    largest_mode = mode or ComputeMode.SPX
    largest = GPU_MEMORY_BYTES // largest_mode.partition_count
    usable = instance_budget(largest)
    if per_partition <= usable:
        return
    key = MEMORY if parsed.memory is not None else MODEL
    need = format_bytes(per_partition, Rounding.UP)
    room = format_bytes(usable, Rounding.DOWN)
    size = format_bytes(largest, Rounding.DOWN)
    larger = f", or a larger {PARTITION_MODE}" if largest_mode is not ComputeMode.SPX else ""
    raise AnnotationError(
        [
            f"{key}: needs {need} per partition, more than any {largest_mode.value} partition "
            f"holds ({room} usable by one vLLM instance of {size}, exclusive or shared); ask "
            f"for less memory or more {PARTITIONS}{larger}"
        ]
    )


class RequestCache:
    """A pod's request, parsed and sized once per pod version, for the extender.

    kube-scheduler sends the same pod to filter, prioritize and bind, and sends a pod that fits
    nowhere again every few seconds; validating the annotations and sizing the model each time
    is repeated work on the scheduling path. The key is the pod's UID and resourceVersion: the
    webhook refuses edits of mipart.io annotations after creation, and the ones mipart writes
    later (the controller's planned mode and hold) come in an update, which changes the
    version. A hold is kept with its expiry, and judged against the clock at each use.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._answers: dict[tuple[str, str], ParsedPod | AnnotationError] = {}
        self._lock = threading.Lock()

    def request_of(
        self, pod: Mapping[str, Any], annotations: Callable[[], Mapping[str, str]]
    ) -> PartitionRequest:
        """``parse_request(annotations())``, from the cache when this version was seen."""
        return self.parsed_of(pod, annotations).request

    def parsed_of(
        self, pod: Mapping[str, Any], annotations: Callable[[], Mapping[str, str]]
    ) -> ParsedPod:
        """``parse_pod(annotations())``, from the cache when this version was seen."""
        meta = pod.get("metadata") or {}
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        if not uid or not version:
            return parse_pod(annotations())
        key = (str(uid), str(version))
        answer = self._answers.get(key)
        if answer is None:
            try:
                answer = parse_pod(annotations())
            except AnnotationError as err:
                answer = err
            with self._lock:
                if len(self._answers) >= self._capacity:
                    # Dicts keep insertion order: the oldest version goes first.
                    del self._answers[next(iter(self._answers))]
                self._answers[key] = answer
        if isinstance(answer, AnnotationError):
            raise AnnotationError(answer.problems)
        return answer
