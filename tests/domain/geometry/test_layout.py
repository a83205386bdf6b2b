"""Steps between node layouts, and the refusal of memory changes that cannot be applied."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.geometry import (
    ComputeMode,
    ComputeStep,
    InvalidLayout,
    MemoryMode,
    MemoryStep,
    NodeLayout,
    check_memory_change,
    is_compatible,
    layout_steps,
)

SPX, DPX, QPX, CPX = ComputeMode.SPX, ComputeMode.DPX, ComputeMode.QPX, ComputeMode.CPX
NPS1, NPS2, NPS4 = MemoryMode.NPS1, MemoryMode.NPS2, MemoryMode.NPS4


def node(memory: MemoryMode, *modes: ComputeMode) -> NodeLayout:
    return NodeLayout(memory, dict(enumerate(modes)))


def test_nps4_while_a_gpu_is_spx_names_the_gpu_and_the_combinations() -> None:
    with pytest.raises(InvalidLayout) as err:
        check_memory_change(node(NPS1, CPX, SPX, CPX), NPS4)
    message = str(err.value)
    assert "gpu 1 is SPX" in message
    assert "gpu 0" not in message
    assert "CPX+NPS4" in message


def test_nps4_with_every_gpu_cpx_is_allowed() -> None:
    check_memory_change(node(NPS1, CPX, CPX), NPS4)


def test_reboot_recovery_plan_goes_through_a_compatible_mode_first() -> None:
    steps = layout_steps(node(NPS1, SPX, SPX), node(NPS4, QPX, CPX))
    assert steps == [
        ComputeStep(0, QPX),
        ComputeStep(1, CPX),
        MemoryStep(NPS4),
        # The reload leaves every GPU in CPX (AUTO mode); GPU 0 wants QPX again.
        ComputeStep(0, QPX),
    ]


def test_plan_of_equal_layouts_is_empty() -> None:
    assert layout_steps(node(NPS4, CPX, QPX), node(NPS4, CPX, QPX)) == []


def test_plan_refuses_an_invalid_desired_layout() -> None:
    with pytest.raises(InvalidLayout, match="gpu 1: SPX cannot run with NPS4"):
        layout_steps(node(NPS1, SPX, SPX), node(NPS4, CPX, SPX))


layouts = st.builds(
    lambda memory, modes: NodeLayout(memory, dict(enumerate(modes))),
    st.sampled_from([NPS1, NPS4]),
    st.lists(st.sampled_from(list(ComputeMode)), min_size=1, max_size=8),
).filter(lambda layout: all(is_compatible(m, layout.memory) for m in layout.compute.values()))


@given(layouts, layouts)
def test_applying_a_plan_reaches_the_desired_layout(start: NodeLayout, goal: NodeLayout) -> None:
    goal = NodeLayout(goal.memory, {g: goal.compute.get(g, m) for g, m in start.compute.items()})
    if not all(is_compatible(m, goal.memory) for m in goal.compute.values()):
        return
    layout = start
    for step in layout_steps(start, goal):
        if isinstance(step, MemoryStep):
            check_memory_change(layout, step.target)  # every memory step is allowed when reached
            layout = layout.after_reload(step.target)
        else:
            assert is_compatible(step.target, layout.memory)
            layout = layout.with_compute(step.gpu, step.target)
    assert layout == goal
