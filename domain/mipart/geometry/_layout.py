"""Node layouts (memory mode + one compute mode per GPU) and the steps between two of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mipart.geometry._partitions import (
    ComputeMode,
    InvalidLayout,
    MemoryMode,
    auto_compute_mode,
    check_combination,
    is_compatible,
    unsupported_memory_mode,
    valid_combinations,
)


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """How a node's GPUs are partitioned: one memory mode for the node, a compute mode per GPU."""

    memory: MemoryMode
    compute: Mapping[int, ComputeMode] = field(default_factory=dict)

    def validate(self, caps: frozenset[MemoryMode] | None = None) -> None:
        for gpu, mode in sorted(self.compute.items()):
            try:
                check_combination(mode, self.memory, caps)
            except InvalidLayout as err:
                raise InvalidLayout(f"gpu {gpu}: {err}") from None

    def with_compute(self, gpu: int, mode: ComputeMode) -> NodeLayout:
        return NodeLayout(self.memory, {**self.compute, gpu: mode})

    def after_reload(self, memory: MemoryMode) -> NodeLayout:
        """The layout the driver leaves after a reload into ``memory`` (AUTO compute mode)."""
        auto = auto_compute_mode(memory)
        return NodeLayout(memory, dict.fromkeys(self.compute, auto))


@dataclass(frozen=True, slots=True)
class MemoryStep:
    target: MemoryMode


@dataclass(frozen=True, slots=True)
class ComputeStep:
    gpu: int
    target: ComputeMode


Step = MemoryStep | ComputeStep


def check_memory_change(
    current: NodeLayout, target: MemoryMode, caps: frozenset[MemoryMode] | None = None
) -> None:
    """Refuse a memory-mode change unless every GPU's compute mode can run under ``target``.

    The driver's reload would silently reset such GPUs to its AUTO mode; an operator who asks
    for NPS4 while a GPU is in SPX has most likely made a mistake, so we name the GPUs and the
    valid combinations instead of touching anything.
    """
    if caps is not None and target not in caps:
        raise InvalidLayout(unsupported_memory_mode(target, caps))
    blocked = [(g, m) for g, m in sorted(current.compute.items()) if not is_compatible(m, target)]
    if blocked:
        gpus = ", ".join(f"gpu {g} is {m.value}" for g, m in blocked)
        raise InvalidLayout(
            f"cannot switch the node to {target.value}: {gpus}; valid combinations: "
            + ", ".join(valid_combinations(caps))
            + "; change those GPUs' compute mode first"
        )


def layout_steps(
    current: NodeLayout, desired: NodeLayout, caps: frozenset[MemoryMode] | None = None
) -> list[Step]:
    """Steps that turn ``current`` into ``desired``.

    A memory change resets every compute mode, so it goes first, preceded by the compute
    changes it needs (a GPU must already run a mode valid under the new memory mode) and
    followed by the compute modes the reload did not leave as desired.
    """
    desired.validate(caps)
    steps: list[Step] = []
    base = current
    if desired.memory != current.memory:
        for gpu, mode in sorted(current.compute.items()):
            if is_compatible(mode, desired.memory):
                continue
            want = desired.compute.get(gpu, auto_compute_mode(desired.memory))
            if not is_compatible(want, current.memory):
                raise InvalidLayout(
                    f"gpu {gpu}: no compute mode runs under both {current.memory.value} and "
                    f"{desired.memory.value} for {want.value}; go through NPS1 first"
                )
            steps.append(ComputeStep(gpu, want))
        steps.append(MemoryStep(desired.memory))
        base = current.after_reload(desired.memory)
    steps.extend(
        ComputeStep(gpu, mode)
        for gpu, mode in sorted(desired.compute.items())
        if base.compute.get(gpu) != mode
    )
    return steps
