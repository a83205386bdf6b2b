"""What the container was given: read from the environment the device plugin's CDI spec sets
(docs/device-plugin.md), or from flags for a dry run outside a pod."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class AllocationError(ValueError):
    """The environment does not describe an allocation; names the variable."""


@dataclass(frozen=True, slots=True)
class GivenAllocation:
    partitions: tuple[str, ...]
    memory_limit_bytes: int  # per partition: this instance's share
    partition_memory_bytes: int  # per partition: what HIP reports as the device's total
    memory_pools: tuple[str, ...]
    startup_socket: Path | None  # the daemon's start-up lock; None outside a node

    @property
    def tensor_parallel(self) -> int:
        return len(self.partitions)


def from_environ(env: Mapping[str, str]) -> GivenAllocation:
    partitions = _list(env, "MIPART_PARTITIONS")
    pools = _list(env, "MIPART_MEMORY_POOL")
    socket = env.get("MIPART_STARTUP_SOCKET")
    return GivenAllocation(
        partitions=partitions,
        memory_limit_bytes=_bytes(env, "MIPART_MEMORY_LIMIT_BYTES"),
        partition_memory_bytes=_bytes(env, "MIPART_PARTITION_MEMORY_BYTES"),
        memory_pools=pools,
        startup_socket=Path(socket) if socket else None,
    )


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = env.get(name, "")
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise AllocationError(
            f"{name} is not set: mipart-vllm runs in a container that holds a mipart.io/partition "
            "(the device plugin sets it); outside one, give --partitions, --memory-limit, "
            "--partition-memory and --memory-pools"
        )
    return items


def _bytes(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    if not value.isdigit() or int(value) <= 0:
        raise AllocationError(f"{name}={value!r}: expected a positive number of bytes")
    return int(value)
