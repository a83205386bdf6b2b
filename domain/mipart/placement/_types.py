"""What the placement engine is asked, what it sees, and what it answers (docs/placement.md).

The public names are re-exported by :mod:`mipart.placement`; import them from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from mipart.geometry import (
    ComputeMode,
    MemoryMode,
    NodeLayout,
    PartitionGeometry,
    Rounding,
    format_bytes,
    partitions_of,
)

GIB = 2**30

# Memory every vLLM instance holds on each of its partitions outside its own limit, exclusive
# or shared: the HIP context, RCCL communicators and hipBLASLt handles are allocated before
# vLLM's initial memory snapshot, so `--gpu-memory-utilization` does not cover them; a real
# per-instance footprint is about util x total plus roughly 0.3-2 GiB, and the packing rule
# reserves "N x ~1 GiB + safety" (docs/facts-vllm.md#memory-outside-the-budget). The rule
# itself is instance_footprint and instance_budget below: use those, not this constant.
INSTANCE_OVERHEAD_BYTES = 1 * GIB


def instance_footprint(limit_bytes: int) -> int:
    """What one vLLM instance with memory limit ``limit_bytes`` holds on each of its
    partitions: the limit, which is vLLM's ``--gpu-memory-utilization`` budget, plus
    INSTANCE_OVERHEAD_BYTES outside that budget.

    vLLM's budget covers only what it allocates after its initial memory snapshot; the HIP
    context, the RCCL communicators and the hipBLASLt handles come before it and lie outside
    (docs/facts-vllm.md#memory-outside-the-budget). That holds for an instance alone on an
    exclusive partition exactly as for one of several on a shared partition.
    """
    return limit_bytes + INSTANCE_OVERHEAD_BYTES


def instance_budget(partition_bytes: int, held_bytes: int = 0) -> int:
    """The largest memory limit a new vLLM instance can get on a partition of
    ``partition_bytes`` where other instances already hold ``held_bytes`` (the sum of their
    instance_footprint): what is left, less the new instance's own memory outside its budget.

    The one usable-memory rule, exclusive or shared: the placement engine places a limit only
    where it is at most this, the webhook refuses one no empty partition allows, mipart-vllm
    refuses to start with one above it on an empty partition, and sizing turns the limit into
    ``--gpu-memory-utilization``. Negative when not even a zero limit fits.
    """
    return partition_bytes - held_bytes - INSTANCE_OVERHEAD_BYTES


# vLLM shards tensor-parallel ranks evenly; MI300X nodes have 8 GPUs and a GPU at most 8
# partitions, and the degrees that divide every model's attention heads are powers of two.
TENSOR_PARALLEL_DEGREES = (1, 2, 4, 8)


class InvalidRequest(ValueError):
    """A request or allocation that makes no sense (zero memory, a tensor-parallel degree of 3)."""


class PlacementConflict(ValueError):
    """An allocation that would break the rules: over-commit, exclusivity, an unusable partition."""


class QosClass(StrEnum):
    """Most urgent first: the order the queue releases in and preemption ranks by."""

    LATENCY = "latency"
    STANDARD = "standard"
    BATCH = "batch"


QOS_RANK = {qos: rank for rank, qos in enumerate(QosClass)}  # 0: the most urgent


class Sharing(StrEnum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


class Policy(StrEnum):
    """How to choose among fits: pack tightly (less fragmentation) or keep pods apart."""

    BINPACK = "binpack"
    SPREAD = "spread"


def policy_for(qos: QosClass) -> Policy:
    """Latency pods spread (less interference); everything else packs, so idle GPUs stay idle
    and the re-partition planner can reshape them."""
    return Policy.SPREAD if qos is QosClass.LATENCY else Policy.BINPACK


@dataclass(frozen=True, slots=True)
class PartitionRequest:
    """What one pod needs: ``partitions`` partitions on one node, each with ``memory_bytes``."""

    memory_bytes: int
    partitions: int = 1
    compute_mode: ComputeMode | None = None
    qos: QosClass = QosClass.STANDARD
    sharing: Sharing = Sharing.SHARED

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0:
            raise InvalidRequest(f"memory per partition must be positive, got {self.memory_bytes}")
        if self.partitions not in TENSOR_PARALLEL_DEGREES:
            allowed = ", ".join(map(str, TENSOR_PARALLEL_DEGREES))
            raise InvalidRequest(f"partitions: {self.partitions} is not one of {allowed}")


@dataclass(frozen=True, slots=True)
class PartitionState:
    """A partition as the placement engine sees it."""

    geometry: PartitionGeometry
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """A node's partitions and whether they may take new pods.

    ``ready`` is false when the daemon's heartbeat is stale: its inventory may be wrong.
    """

    name: str
    partitions: tuple[PartitionState, ...]
    memory_mode: MemoryMode
    drained_gpus: frozenset[int] = frozenset()
    ready: bool = True

    @classmethod
    def from_layout(
        cls,
        name: str,
        layout: NodeLayout,
        *,
        unhealthy: Iterable[str] = (),
        drained_gpus: Iterable[int] = (),
        ready: bool = True,
    ) -> NodeCapacity:
        """A node partitioned as ``layout`` says, e.g. for tests and what-if questions."""
        sick = frozenset(unhealthy)
        return cls(
            name=name,
            partitions=tuple(
                PartitionState(geometry, healthy=geometry.id not in sick)
                for gpu, mode in sorted(layout.compute.items())
                for geometry in partitions_of(gpu, mode, layout.memory)
            ),
            memory_mode=layout.memory,
            drained_gpus=frozenset(drained_gpus),
            ready=ready,
        )


@dataclass(frozen=True, slots=True)
class Allocation:
    """Which pod holds which partitions of a node, and the memory limit it got on each."""

    pod: str
    pod_uid: str
    node: str
    partition_ids: tuple[str, ...]
    memory_bytes: int
    sharing: Sharing = Sharing.SHARED

    def __post_init__(self) -> None:
        if not self.partition_ids:
            raise InvalidRequest(f"allocation of {self.pod}: no partitions")
        if len(set(self.partition_ids)) != len(self.partition_ids):
            raise InvalidRequest(f"allocation of {self.pod}: a partition is listed twice")
        if self.memory_bytes < 0:
            raise InvalidRequest(f"allocation of {self.pod}: negative memory")

    @property
    def total_bytes(self) -> int:
        """Memory held over all its partitions: what evicting the pod frees."""
        return self.memory_bytes * len(self.partition_ids)


@dataclass(frozen=True, slots=True)
class Placement:
    """The engine's choice on one node: which partitions, and how good a fit (0..10)."""

    node: str
    partition_ids: tuple[str, ...]
    score: int
    policy: Policy
    compute_mode: ComputeMode
    gpus: tuple[int, ...]
    # What a new instance could still get on the chosen partitions beyond the request
    # (instance_budget less the limit; exclusive: what the pod strands).
    leftover_bytes: int

    @property
    def detail(self) -> str:
        """One line for logs: why this choice, e.g. ``binpack: 1 CPX on GPU 3, 2.9Gi left``."""
        gpus = ", ".join(map(str, self.gpus))
        noun = "GPU" if len(self.gpus) == 1 else "GPUs"
        left = format_bytes(self.leftover_bytes, Rounding.DOWN)
        return (
            f"{self.policy}: {len(self.partition_ids)} {self.compute_mode} on {noun} {gpus}, "
            f"{left} left, score {self.score}"
        )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every node asked about is in exactly one of the two maps."""

    feasible: dict[str, Placement]
    rejected: dict[str, str]

    def best(self) -> Placement | None:
        """The highest score, ties to the first node by name: where a pod most likely goes
        (kube-scheduler takes the extender's top-scored node)."""
        if not self.feasible:
            return None
        return min(self.feasible.values(), key=lambda p: (-p.score, p.node))


@dataclass(frozen=True, slots=True)
class Feasibility:
    """The cheap answer (no partition choice, no score): what the extender's filter needs.

    A node that does not fit is in ``rejected`` if evicting pods could make room there, and in
    ``unresolvable`` if nothing but the node itself can change (reasons.UNRESOLVABLE).
    """

    feasible: tuple[str, ...]
    rejected: dict[str, str]
    unresolvable: dict[str, str]

    def reasons(self) -> dict[str, str]:
        """Why each node that does not fit does not, whichever kind."""
        return {**self.rejected, **self.unresolvable}


@dataclass(frozen=True, slots=True)
class PartitionUsage:
    """How much of a partition is taken, in the engine's accounting (for views and checks)."""

    partition_id: str
    gpu_index: int
    compute_mode: ComputeMode
    memory_bytes: int
    usable: bool
    instances: int
    exclusive: bool
    # Σ memory limits of the shared allocations (without the per-instance reserve).
    shared_bytes: int
    # The largest limit a new shared pod could get here now, instance_budget (0 when none).
    free_bytes: int


def allocation_for(
    placement: Placement, request: PartitionRequest, *, pod: str, pod_uid: str
) -> Allocation:
    """The allocation that records ``placement`` for a pod (bind turns it into the annotation)."""
    return Allocation(
        pod=pod,
        pod_uid=pod_uid,
        node=placement.node,
        partition_ids=placement.partition_ids,
        memory_bytes=request.memory_bytes,
        sharing=request.sharing,
    )
