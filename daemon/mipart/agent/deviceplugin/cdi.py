"""CDI specs, one file per slot, naming the device ``mipart.io/slot=<slot>``.

The container runtime resolves the CDI name the kubelet got from Allocate by reading this
directory when it creates the container, which PreStartContainer precedes: so the file holds
whatever the pod holding the slot was allocated, written just in time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mipart.contract.environment import ContainerAllocation, to_environ
from mipart.contract.resources import CDI_KIND
from mipart.geometry import NodeInventory, PartitionInventory
from mipart.placement import Allocation

CDI_VERSION = "0.6.0"
FILE_PREFIX = "mipart.io-slot-"
# Where a container finds its pod's start-up lock socket: its own directory, mounted here.
CONTAINER_LAUNCHER_DIR = Path("/run/mipart/launcher")


def device_name(slot: str) -> str:
    """The fully qualified CDI name Allocate hands the kubelet for ``slot``."""
    return f"{CDI_KIND}={slot}"


class UnknownPartition(LookupError):
    pass


def memory_pools(allocation: Allocation, inventory: NodeInventory) -> tuple[str, ...]:
    """The memory pools of the allocation's partitions, in its order."""
    parts = [_partition(inventory, pid) for pid in allocation.partition_ids]
    return tuple(dict.fromkeys(p.geometry.memory_pool for p in parts))


def spec(
    slot: str,
    allocation: Allocation,
    inventory: NodeInventory,
    launcher_socket: Path | None = None,
) -> dict[str, Any]:
    """The slot's CDI spec. ``launcher_socket``: the pod's own start-up lock socket on the
    host; its directory, and nothing else of the daemon's, is mounted into the container."""
    parts = [_partition(inventory, pid) for pid in allocation.partition_ids]
    nodes = [{"path": "/dev/kfd"}] + [{"path": f"/dev/dri/renderD{p.render_minor}"} for p in parts]
    given = ContainerAllocation(
        partitions=allocation.partition_ids,
        # Per partition, as in the allocation: the launcher caps each device's pool with it.
        memory_limit_bytes=allocation.memory_bytes,
        # What HIP reports as each device's total: vLLM's --gpu-memory-utilization is a
        # fraction of it (every partition of an allocation has one mode, hence one size).
        partition_memory_bytes=min(p.geometry.memory_bytes for p in parts),
        memory_pools=memory_pools(allocation, inventory),
        # The pod's start-up lock, and nothing else the daemon serves (see StartupService).
        startup_socket=(
            str(CONTAINER_LAUNCHER_DIR / launcher_socket.name)
            if launcher_socket is not None
            else None
        ),
    )
    env = [
        # The container sees only its partitions' render nodes, which HIP numbers from 0;
        # naming them explicitly stops a launcher's inherited value from pointing elsewhere.
        "HIP_VISIBLE_DEVICES=" + ",".join(str(i) for i in range(len(parts))),
        *(f"{name}={value}" for name, value in to_environ(given).items()),
    ]
    edits: dict[str, Any] = {"deviceNodes": nodes, "env": env}
    if launcher_socket is not None:
        edits["mounts"] = [
            {
                "hostPath": str(launcher_socket.parent),
                "containerPath": str(CONTAINER_LAUNCHER_DIR),
                "options": ["bind", "nosuid", "nodev", "noexec"],
            }
        ]
    return {
        "cdiVersion": CDI_VERSION,
        "kind": CDI_KIND,
        "devices": [{"name": slot, "containerEdits": edits}],
    }


def path_for(cdi_dir: Path, slot: str) -> Path:
    return cdi_dir / f"{FILE_PREFIX}{slot}.json"


def write(cdi_dir: Path, slot: str, body: dict[str, Any]) -> Path:
    """Write the spec atomically: a runtime reading the directory sees the old file or the new
    one, never half of one."""
    cdi_dir.mkdir(parents=True, exist_ok=True)
    target = path_for(cdi_dir, slot)
    # The temporary name must not end in .json, or a runtime scanning the directory could
    # parse it mid-write.
    fd, tmp = tempfile.mkstemp(dir=cdi_dir, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(body, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def written_slots(cdi_dir: Path) -> set[str]:
    if not cdi_dir.is_dir():
        return set()
    return {
        p.name.removeprefix(FILE_PREFIX).removesuffix(".json")
        for p in cdi_dir.glob(f"{FILE_PREFIX}*.json")
    }


def remove(cdi_dir: Path, slot: str) -> None:
    path_for(cdi_dir, slot).unlink(missing_ok=True)


def _partition(inventory: NodeInventory, partition_id: str) -> PartitionInventory:
    for gpu in inventory.gpus:
        for part in gpu.partitions:
            if part.id == partition_id:
                return part
    raise UnknownPartition(f"partition {partition_id} is not on this node (now)")
