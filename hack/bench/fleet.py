"""The synthetic MI300X fleet both benchmarks place pods on: 8 GPUs a node, mixed layouts."""

from __future__ import annotations

from mipart.geometry import ComputeMode, MemoryMode, NodeLayout

S, D, Q, C = ComputeMode.SPX, ComputeMode.DPX, ComputeMode.QPX, ComputeMode.CPX

# (memory mode, compute mode of GPUs 0-7), as often as each appears in the fleet: mostly NPS1
# with mixed compute modes, some all-CPX or QPX+CPX under NPS4 (both valid there).
LAYOUTS: list[tuple[MemoryMode, tuple[ComputeMode, ...]]] = [
    (MemoryMode.NPS1, (S, S, S, S, S, S, S, S)),
    (MemoryMode.NPS1, (S, S, S, S, S, S, S, S)),
    (MemoryMode.NPS1, (C, C, C, C, S, S, S, S)),
    (MemoryMode.NPS1, (Q, Q, Q, Q, D, D, D, D)),
    (MemoryMode.NPS1, (S, S, D, D, Q, Q, C, C)),
    (MemoryMode.NPS1, (C, C, C, C, C, C, C, C)),
    (MemoryMode.NPS4, (C, C, C, C, C, C, C, C)),
    (MemoryMode.NPS4, (Q, Q, Q, Q, C, C, C, C)),
]


def layout(node_index: int) -> NodeLayout:
    """The layout of the fleet's ``node_index``-th node."""
    memory, compute = LAYOUTS[node_index % len(LAYOUTS)]
    return NodeLayout(memory, dict(enumerate(compute)))
