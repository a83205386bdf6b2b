"""Memory sizing: the model catalogue, how much memory one vLLM instance needs on each of its
partitions, the numbers mipart-vllm passes vLLM, and which pods use more than they were given.
"""

from __future__ import annotations

from mipart.sizing._limits import (
    LimitAction,
    LimitWatch,
    MemoryReading,
    PodMemory,
    read_pod_memory,
)
from mipart.sizing._memory import (
    DType,
    InvalidSizing,
    MemoryEstimate,
    estimate,
    sampler_bytes,
)
from mipart.sizing._models import (
    CATALOG,
    InvalidModelConfig,
    ModelSpec,
    UnknownModel,
    count_parameters,
    lookup,
    same_architecture,
    spec_from_config,
)
from mipart.sizing._serving import (
    DoesNotFit,
    ServingLimits,
    ServingPlan,
    plan_serving,
    utilization,
)

__all__ = [
    "CATALOG",
    "DType",
    "DoesNotFit",
    "InvalidModelConfig",
    "InvalidSizing",
    "LimitAction",
    "LimitWatch",
    "MemoryEstimate",
    "MemoryReading",
    "ModelSpec",
    "PodMemory",
    "ServingLimits",
    "ServingPlan",
    "UnknownModel",
    "count_parameters",
    "estimate",
    "lookup",
    "plan_serving",
    "read_pod_memory",
    "same_architecture",
    "sampler_bytes",
    "spec_from_config",
    "utilization",
]
