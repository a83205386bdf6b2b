"""The re-partition planner: which idle GPUs get which layout so that waiting pods fit
(docs/planner.md). The rules are in _plan; the rest is internal.
"""

from __future__ import annotations

from mipart.planner._nodes import (
    natural_mode,
)
from mipart.planner._plan import (
    plan,
)
from mipart.planner._types import (
    Admission,
    ComputeChange,
    Decision,
    Deferral,
    Eviction,
    Hold,
    MemoryChange,
    NodeSnapshot,
    Plan,
    PlannerPolicy,
    Promise,
    Waiting,
)

__all__ = [
    "Admission",
    "ComputeChange",
    "Decision",
    "Deferral",
    "Eviction",
    "Hold",
    "MemoryChange",
    "NodeSnapshot",
    "Plan",
    "PlannerPolicy",
    "Promise",
    "Waiting",
    "natural_mode",
    "plan",
]
