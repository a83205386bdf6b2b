"""Seeded inference traces for the packing benchmark: Deployments of real models, each replica
sized by the estimator the webhook and the launcher use (mipart.sizing.estimate).

A trace is what a platform team might be asked to run at once: Deployments of Llama-3.1 8B and
70B, Mistral 7B, Qwen2.5 32B and 72B and Mixtral 8x7B, in bf16 or fp8, with a context length,
a number of concurrent sequences and (for the large bf16 models, sometimes) tensor parallelism,
and a replica count. Every replica is one vLLM instance on partitions of its own (exclusive):
the serving layout AMD's multi-instance recipe uses, and the one in which the partitioning
matters — on a shared SPX GPU small instances would pack just as densely, but without the
hardware isolation that is the point of partitions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mipart.geometry import GPU_MEMORY_BYTES, ComputeMode, MemoryMode
from mipart.placement import PartitionRequest, Sharing
from mipart.planner._nodes import natural_mode
from mipart.sizing import DType, estimate, lookup

SMALL = ("meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3")
LARGE = (
    "Qwen/Qwen2.5-32B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "Qwen/Qwen2.5-72B-Instruct",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
)
SHORT = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama3-8b",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistral-7b",
    "Qwen/Qwen2.5-32B-Instruct": "qwen2.5-32b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama3-70b",
    "Qwen/Qwen2.5-72B-Instruct": "qwen2.5-72b",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b",
}
# trace name -> (models, demand as a fraction of the cluster's memory)
KINDS: dict[str, tuple[tuple[str, ...], float]] = {
    "small": (SMALL, 1.0),
    "large": (LARGE, 1.0),
    "mixed": (SMALL + LARGE, 1.0),
}
# Replicas per Deployment: small models scale out, large ones less so.
REPLICAS = {**dict.fromkeys(SMALL, (2, 16)), **dict.fromkeys(LARGE, (1, 4))}
CONTEXTS = (4096, 8192, 8192, 16384)
SEQUENCES = (1, 2, 4)
# Models too large for one GPU's worth of partitions in bf16 sometimes run tensor parallel.
TENSOR_PARALLEL = (1, 1, 2)
GPUS_PER_NODE = 8


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    model: str
    dtype: DType
    tensor_parallel: int
    max_model_len: int
    max_num_seqs: int
    replicas: int
    request: PartitionRequest

    @property
    def natural(self) -> ComputeMode:
        """The smallest partitions that hold a replica (NPS1 allows them all)."""
        mode = natural_mode(self.request, MemoryMode.NPS1, GPUS_PER_NODE)
        assert mode is not None, "generate() keeps only replicas that fit an SPX GPU"
        return mode


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    seed: int
    deployments: tuple[Deployment, ...]

    def replicas(self) -> list[tuple[str, PartitionRequest]]:
        """Every replica in queue order: Deployments in arrival order, each scaled at once."""
        return [(f"{d.name}-{i}", d.request) for d in self.deployments for i in range(d.replicas)]


def generate(kind: str, *, seed: int, nodes: int) -> Trace:
    """Deployments drawn until their replicas, each on its natural partitions, would take the
    kind's share of ``nodes`` nodes' memory."""
    models, load = KINDS[kind]
    rng = random.Random(f"{kind}/{seed}")
    target = load * nodes * GPUS_PER_NODE * GPU_MEMORY_BYTES
    deployments: list[Deployment] = []
    taken = 0
    while taken < target:
        deployment = _draw(rng, models, len(deployments))
        if deployment is None:
            continue
        deployments.append(deployment)
        mode = deployment.natural
        taken += deployment.replicas * deployment.tensor_parallel * _partition_bytes(mode)
    return Trace(kind, seed, tuple(deployments))


def _draw(rng: random.Random, models: tuple[str, ...], index: int) -> Deployment | None:
    model = rng.choice(models)
    dtype = rng.choice((DType.BF16, DType.FP8))
    tp = rng.choice(TENSOR_PARALLEL) if model in LARGE and dtype is DType.BF16 else 1
    length, seqs = rng.choice(CONTEXTS), rng.choice(SEQUENCES)
    per_partition = estimate(
        lookup(model), dtype=dtype, max_model_len=length, max_num_seqs=seqs, tensor_parallel=tp
    ).per_partition_bytes
    if per_partition > GPU_MEMORY_BYTES:
        return None  # does not fit one GPU at this TP: a user would pick a larger TP
    return Deployment(
        name=f"d{index:02d}-{SHORT[model]}-{dtype}-tp{tp}-{length // 1024}k-x{seqs}",
        model=model,
        dtype=dtype,
        tensor_parallel=tp,
        max_model_len=length,
        max_num_seqs=seqs,
        replicas=rng.randint(*REPLICAS[model]),
        request=PartitionRequest(per_partition, partitions=tp, sharing=Sharing.EXCLUSIVE),
    )


def _partition_bytes(mode: ComputeMode) -> int:
    return GPU_MEMORY_BYTES // mode.partition_count
