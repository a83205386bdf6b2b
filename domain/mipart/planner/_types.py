"""What the re-partition planner is told, how it is tuned, and what it answers (docs/planner.md).

The public names are re-exported by :mod:`mipart.planner`; import them from there.
Times are seconds on one clock the caller chooses (the controller's wall clock, a simulation's
clock); the planner only compares and subtracts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mipart.geometry import ComputeMode, MemoryMode
from mipart.placement import GIB, NodeCapacity, PartitionRequest


@dataclass(frozen=True, slots=True)
class Promise:
    """Where a plan counted a pod: these partitions of ``node``, in ``compute_mode``.

    The partitions may not exist yet (a change the plan decided or deferred will make them).
    Given back to the next round with the pod, a promise is kept before anything else is
    placed, so that no pod planned later takes the capacity counted for this one.
    """

    node: str
    partition_ids: tuple[str, ...]
    compute_mode: ComputeMode


@dataclass(frozen=True, slots=True)
class Waiting:
    """A pod that waits for a partition: queued behind the gate, or unschedulable.

    ``since`` comes from the pod (when it was gated or first found unschedulable), not from
    the planner's memory, so a restarted controller judges demand exactly as before.
    ``promise`` is where the last round counted it, if anywhere.
    """

    request: PartitionRequest
    since: float
    name: str = ""
    promise: Promise | None = None


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node as the planner needs it: what the engine sees, plus how it may change.

    ``capacity`` is the layout the daemon reports (partitions, memory mode, drains, health,
    readiness); allocations are given to ``plan`` beside it. ``switching`` maps the GPUs whose
    asked-for compute mode has not landed yet to that mode (GPUNode.spec against its status),
    and ``reloading`` is the memory mode of a reload in flight: the planner counts what they
    will offer, so pods waiting for them do not cause more changes. ``busy_gpus`` hold
    processes that no allocation accounts for: a switch would fail there with BUSY.
    """

    capacity: NodeCapacity
    memory_caps: frozenset[MemoryMode] = frozenset(MemoryMode)
    gpu_changed_at: Mapping[int, float] = field(default_factory=dict)
    memory_changed_at: float | None = None
    switching: Mapping[int, ComputeMode] = field(default_factory=dict)
    reloading: MemoryMode | None = None
    busy_gpus: frozenset[int] = frozenset()

    @property
    def name(self) -> str:
        return self.capacity.name

    @property
    def memory_mode(self) -> MemoryMode:
        return self.capacity.memory_mode

    def compute_modes(self) -> dict[int, ComputeMode]:
        """Each GPU's compute mode, from the partitions it reports."""
        return {p.geometry.gpu_index: p.geometry.compute_mode for p in self.capacity.partitions}

    @property
    def changing(self) -> int:
        """GPUs being re-partitioned now: all of them during a reload."""
        return len(self.compute_modes()) if self.reloading else len(self.switching)


@dataclass(frozen=True, slots=True)
class PlannerPolicy:
    """The planner's brakes. Defaults suit a production cluster; see docs/planner.md.

    - ``settle_s``: demand younger than this cannot cause a change (a pod the scheduler is
      about to place, or a burst that passes, is not worth a re-partition);
    - ``cooldown_s``: a GPU that changed waits this long before it changes again;
    - ``max_changing``: GPUs being re-partitioned at once in the whole cluster (a reload
      counts every GPU of its node), so a wrong plan costs a bounded amount of capacity;
    - ``change_penalty``: a change must beat keeping a GPU's mode by this factor in how well
      the waiting replicas fill the partitions (hysteresis against marginal moves);
    - ``reload_min_gain_bytes``: waiting memory a memory-mode change must let fit to be
      worth a driver reload (all GPUs of the node, ~140 s);
    - ``memory_cooldown_s``: a node waits this long between memory-mode changes;
    - ``aging_s``: within its QoS class a pod is planned largest first (so small pods do not
      spread over the GPUs large ones need), until it has waited this long: from then on it
      goes before every younger pod of its class, oldest first;
    - ``defragment`` (off by default): propose evicting the batch pods of a nearly empty GPU
      (they hold at most ``defrag_max_used`` of its memory) when latency or standard pods
      that still wait could use the GPU whole, for at least ``defrag_min_gain`` times the
      memory evicted; at most ``defrag_per_round`` GPUs per round (docs/planner.md).
    """

    settle_s: float = 60.0
    cooldown_s: float = 600.0
    max_changing: int = 8
    change_penalty: float = 0.25
    reload_min_gain_bytes: int = 96 * GIB
    memory_cooldown_s: float = 3600.0
    aging_s: float = 900.0
    defragment: bool = False
    defrag_max_used: float = 0.5
    defrag_min_gain: float = 1.5
    defrag_per_round: int = 2


@dataclass(frozen=True, slots=True)
class ComputeChange:
    """Set one GPU's compute mode (the controller writes it into GPUNode.spec)."""

    node: str
    gpu: int
    source: ComputeMode
    target: ComputeMode
    reason: str

    @property
    def labels(self) -> dict[str, str]:
        """Bounded metric labels (the reason is for the Event)."""
        return {"kind": "compute", "from": self.source.value, "to": self.target.value}


@dataclass(frozen=True, slots=True)
class MemoryChange:
    """Set a node's memory (NPS) mode: a driver reload that resets every GPU's compute mode,
    so the plan lists the compute modes wanted after it as ComputeChanges of the same node."""

    node: str
    source: MemoryMode
    target: MemoryMode
    reason: str

    @property
    def labels(self) -> dict[str, str]:
        return {"kind": "memory", "from": self.source.value, "to": self.target.value}


Decision = ComputeChange | MemoryChange


class Hold(StrEnum):
    """Why a change the waiting demand wants is not made now."""

    SETTLING = "settling"  # the demand behind it is younger than settle_s
    COOLDOWN = "cooldown"  # a GPU (or the node's memory mode) changed too recently
    BOUND = "bound"  # max_changing GPUs are already changing


@dataclass(frozen=True, slots=True)
class Deferral:
    """A change the planner wants but holds back, with why (an Event and a metric too)."""

    node: str
    gpus: tuple[int, ...]
    target: ComputeMode | MemoryMode  # a memory mode: a held reload of the whole node
    hold: Hold
    reason: str


@dataclass(frozen=True, slots=True)
class Eviction:
    """Defragmentation: evict these batch pods (by UID) from ``gpu`` of ``node`` so that the
    GPU can become ``target`` for more urgent pods that wait (PlannerPolicy.defragment)."""

    node: str
    gpu: int
    pod_uids: tuple[str, ...]
    target: ComputeMode
    reason: str


@dataclass(frozen=True, slots=True)
class Admission:
    """A waiting pod the plan counted on ``promise``'s partitions.

    Released (``Plan.admitted``), the pod is held to exactly those partitions while the plan
    holds: without that the extender could bind it to any partition that fits, such as the
    idle SPX GPU the plan keeps for a 70B replica, or the partitions counted for another pod.
    Still waiting for a change (``Plan.promised``), the promise goes back to the next round.
    """

    position: int  # in the demand as given
    promise: Promise

    @property
    def node(self) -> str:
        return self.promise.node

    @property
    def compute_mode(self) -> ComputeMode:
        return self.promise.compute_mode

    @property
    def partition_ids(self) -> tuple[str, ...]:
        return self.promise.partition_ids


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer for one round.

    ``admitted`` are the pods that fit the layout as it is, in queue order; ``promised`` wait
    for a change the plan decided or deferred, on the partitions it will make; the others wait
    for capacity. Releasing only the admitted, each to its partitions, keeps a pod from taking
    a GPU the plan keeps for another (an 8B replica on the idle SPX GPU a 70B replica needs).
    """

    decisions: tuple[Decision, ...]
    deferrals: tuple[Deferral, ...]
    admitted: tuple[Admission, ...]
    promised: tuple[Admission, ...] = ()
    evictions: tuple[Eviction, ...] = ()
