"""The container variables of a mipart pod: one writer and one reader each.

- The device plugin's CDI spec (mipart.agent.deviceplugin.cdi) writes what the container was
  given, from the pod's allocation: ``to_environ``.
- The webhook writes, through the downward API, the allocation annotation's text and the model
  the pod's memory was sized for: ``allocation_env`` and ``model_env``.
- ``mipart-vllm`` (mipart.launcher) reads all of them: ``from_environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mipart.contract.resources import PARTITION_RESOURCE

PARTITIONS = "MIPART_PARTITIONS"
MEMORY_LIMIT_BYTES = "MIPART_MEMORY_LIMIT_BYTES"
PARTITION_MEMORY_BYTES = "MIPART_PARTITION_MEMORY_BYTES"
MEMORY_POOL = "MIPART_MEMORY_POOL"
STARTUP_SOCKET = "MIPART_STARTUP_SOCKET"
ALLOCATION = "MIPART_ALLOCATION"
MODEL = "MIPART_MODEL"


class AllocationError(ValueError):
    """The environment does not describe an allocation; names the variable."""


@dataclass(frozen=True, slots=True)
class ContainerAllocation:
    """What the device plugin gave one container."""

    partitions: tuple[str, ...]
    memory_limit_bytes: int  # per partition: this instance's share
    partition_memory_bytes: int  # per partition: what HIP reports as the device's total
    memory_pools: tuple[str, ...]
    startup_socket: str | None = None  # the daemon's start-up lock; None outside a node

    @property
    def tensor_parallel(self) -> int:
        return len(self.partitions)


def to_environ(given: ContainerAllocation) -> dict[str, str]:
    env = {
        PARTITIONS: ",".join(given.partitions),
        MEMORY_LIMIT_BYTES: str(given.memory_limit_bytes),
        PARTITION_MEMORY_BYTES: str(given.partition_memory_bytes),
        MEMORY_POOL: ",".join(given.memory_pools),
    }
    if given.startup_socket:
        env[STARTUP_SOCKET] = given.startup_socket
    return env


def from_environ(env: Mapping[str, str]) -> ContainerAllocation:
    return ContainerAllocation(
        partitions=_list(env, PARTITIONS),
        memory_limit_bytes=_bytes(env, MEMORY_LIMIT_BYTES),
        partition_memory_bytes=_bytes(env, PARTITION_MEMORY_BYTES),
        memory_pools=_list(env, MEMORY_POOL),
        startup_socket=env.get(STARTUP_SOCKET) or None,
    )


def annotation_env(name: str, annotation: str) -> dict[str, object]:
    """A container variable the kubelet fills from one of the pod's annotations."""
    return {
        "name": name,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"}},
    }


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())
    if not items:
        raise AllocationError(
            f"{name} is not set: mipart-vllm runs in a container that holds a {PARTITION_RESOURCE} "
            "(the device plugin sets it); outside one, give --partitions, --memory-limit, "
            "--partition-memory and --memory-pools"
        )
    return items


def _bytes(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    if not value.isdigit() or int(value) <= 0:
        raise AllocationError(f"{name}={value!r}: expected a positive number of bytes")
    return int(value)
