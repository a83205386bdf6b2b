"""Seeded inference traces for the packing benchmark: Deployments of real models, each replica
sized by the estimator the webhook and the launcher use (mipart.sizing.estimate).

A trace is what a platform team might be asked to run at once: Deployments of Llama-3.1 8B and
70B, Mistral 7B, Qwen2.5 32B and 72B and Mixtral 8x7B, in bf16 or fp8, with a context length,
a number of concurrent sequences and (for the large bf16 models, sometimes) tensor parallelism,
a replica count and, in the over-subscribed kinds, a QoS class. ``churn`` adds time: epochs in
which some Deployments leave and new ones arrive.

Every replica is one vLLM instance on partitions of its own (exclusive): the serving layout
AMD's multi-instance recipe uses, and the one in which the partitioning matters: on a shared
SPX GPU small instances would pack just as densely, but without the hardware isolation that is
the point of partitions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from mipart.geometry import GPU_MEMORY_BYTES, ComputeMode, MemoryMode
from mipart.placement import PartitionRequest, QosClass, Sharing
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


@dataclass(frozen=True, slots=True)
class Kind:
    """What a trace kind draws: its models, and how much it asks for.

    ``natural`` loads count each replica on its natural partitions (the smallest that hold it),
    so a load of 1.0 asks for the memory of every partition but fills 65-75 % of it with
    limits: demand the layout decides but that always fits. Otherwise the load counts the
    replicas' limits (Σ limit x partitions) against the fleet's memory, drawn per seed from
    ``load``: demand above supply, where what to leave waiting matters as much as where to
    put things. ``classes`` draws a QoS class per Deployment (else every pod is standard).
    """

    models: tuple[str, ...]
    load: tuple[float, float]
    natural: bool = False
    classes: bool = False


KINDS: dict[str, Kind] = {
    "small": Kind(SMALL, (1.0, 1.0), natural=True),
    "large": Kind(LARGE, (1.0, 1.0), natural=True),
    "mixed": Kind(SMALL + LARGE, (1.0, 1.0), natural=True),
    "over-mixed": Kind(SMALL + LARGE, (1.0, 1.3)),
    "over-large": Kind(LARGE, (1.0, 1.3), classes=True),
    "over-mixed-qos": Kind(SMALL + LARGE, (1.0, 1.3), classes=True),
}
# A Deployment's QoS class in the kinds that draw one.
CLASS_WEIGHTS = {QosClass.LATENCY: 0.2, QosClass.STANDARD: 0.5, QosClass.BATCH: 0.3}
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
        mode = self.natural_or_none()
        assert mode is not None, "generate() keeps only replicas that fit an SPX GPU"
        return mode

    def natural_or_none(self) -> ComputeMode | None:
        return natural_mode(self.request, MemoryMode.NPS1, GPUS_PER_NODE)


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    seed: int
    deployments: tuple[Deployment, ...]

    def replicas(self) -> list[tuple[str, PartitionRequest]]:
        """Every replica in queue order: Deployments in arrival order, each scaled at once."""
        return [(f"{d.name}-{i}", d.request) for d in self.deployments for i in range(d.replicas)]


def generate(kind: str, *, seed: int, nodes: int) -> Trace:
    """Deployments drawn until they ask for the kind's load of ``nodes`` nodes' memory."""
    spec = KINDS[kind]
    rng = random.Random(f"{kind}/{seed}")
    target = rng.uniform(*spec.load) * nodes * GPUS_PER_NODE * GPU_MEMORY_BYTES
    deployments, _ = _fill(rng, spec, target, [], 0)
    return Trace(kind, seed, tuple(deployments))


@dataclass(frozen=True, slots=True)
class ChurnTrace:
    """Epochs of demand: in each, some Deployments of the last have left and new ones arrived,
    so that the demand is back at the load; a Deployment's replicas keep their names."""

    name: str
    seed: int
    epochs: tuple[tuple[Deployment, ...], ...]


def churn(
    kind: str, *, seed: int, nodes: int, epochs: int, leave: float = 0.3, first: float = 0.6
) -> ChurnTrace:
    """``epochs`` epochs of ``kind``: the first asks for ``first`` of the fleet's memory (a
    quiet cluster, where batch pods find room), the others for the kind's load; at each new
    epoch every Deployment leaves with probability ``leave``, and new Deployments arrive
    until the epoch's load is reached."""
    spec = KINDS[kind]
    rng = random.Random(f"churn/{kind}/{seed}")
    fleet = nodes * GPUS_PER_NODE * GPU_MEMORY_BYTES
    target = rng.uniform(*spec.load) * fleet
    present: list[Deployment] = []
    drawn = 0
    history: list[tuple[Deployment, ...]] = []
    for epoch in range(epochs):
        present = [d for d in present if rng.random() >= leave]
        load = first * fleet if epoch == 0 else target
        present, drawn = _fill(rng, spec, load, present, drawn)
        history.append(tuple(present))
    return ChurnTrace(f"churn-{kind}", seed, tuple(history))


def _fill(
    rng: random.Random, spec: Kind, target: float, present: list[Deployment], drawn: int
) -> tuple[list[Deployment], int]:
    """``present`` with Deployments added until they ask for ``target`` bytes, and how many
    have been drawn so far (the next one's number)."""
    deployments = list(present)
    taken = sum(_asks(d, spec) for d in deployments)
    while taken < target:
        deployment = _draw(rng, spec, drawn)
        if deployment is None:
            continue
        drawn += 1
        deployments.append(deployment)
        taken += _asks(deployment, spec)
    return deployments, drawn


def _asks(deployment: Deployment, spec: Kind) -> int:
    natural = _partition_bytes(deployment.natural) if spec.natural else None
    per = natural or deployment.request.memory_bytes
    return deployment.replicas * deployment.tensor_parallel * per


def _draw(rng: random.Random, spec: Kind, index: int) -> Deployment | None:
    model = rng.choice(spec.models)
    dtype = rng.choice((DType.BF16, DType.FP8))
    tp = rng.choice(TENSOR_PARALLEL) if model in LARGE and dtype is DType.BF16 else 1
    length, seqs = rng.choice(CONTEXTS), rng.choice(SEQUENCES)
    per_partition = estimate(
        lookup(model), dtype=dtype, max_model_len=length, max_num_seqs=seqs, tensor_parallel=tp
    ).per_partition_bytes
    if per_partition > GPU_MEMORY_BYTES:
        return None  # does not fit one GPU at this TP: a user would pick a larger TP
    qos = QosClass.STANDARD
    if spec.classes:
        qos = rng.choices(list(CLASS_WEIGHTS), weights=list(CLASS_WEIGHTS.values()))[0]
    request = PartitionRequest(per_partition, partitions=tp, sharing=Sharing.EXCLUSIVE)
    deployment = Deployment(
        name=f"d{index:03d}-{SHORT[model]}-{dtype}-tp{tp}-{length // 1024}k-x{seqs}",
        model=model,
        dtype=dtype,
        tensor_parallel=tp,
        max_model_len=length,
        max_num_seqs=seqs,
        replicas=rng.randint(*REPLICAS[model]),
        request=request,
    )
    if deployment.natural_or_none() is None:
        return None  # the instance reserve leaves no partition that holds it
    if not spec.classes:
        return deployment
    return replace(deployment, name=f"{deployment.name}-{qos}", request=replace(request, qos=qos))


def _partition_bytes(mode: ComputeMode) -> int:
    return GPU_MEMORY_BYTES // mode.partition_count
