"""GPUNodes as the re-partition planner reads them, and its decisions written back as spec.

When each GPU last changed is kept on the GPUNode itself (annotation ``mipart.io/changed-at``,
written with the spec in one patch), so a restarted controller keeps honouring cool-downs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mipart.cluster.capacity import capacity_of
from mipart.contract.annotations import CHANGED_AT
from mipart.contract.resources import GPUNODES
from mipart.geometry import ComputeMode, MemoryMode
from mipart.kube.api import KubeApi
from mipart.planner import ComputeChange, Decision, MemoryChange, NodeSnapshot

_MEMORY_KEY = "memory"
_COMPUTE_MODES = {m.value for m in ComputeMode}
_MEMORY_MODES = {m.value for m in MemoryMode}
# What an MI300X supports when a daemon does not say (an older one).
_DEFAULT_CAPS = frozenset({MemoryMode.NPS1, MemoryMode.NPS4})


def snapshot(gpunode: dict[str, Any], *, now: datetime, stale_after_s: float) -> NodeSnapshot:
    status = gpunode.get("status") or {}
    spec = gpunode.get("spec") or {}
    changed = _changed_at(gpunode)
    reported = {int(g["index"]): g.get("computePartition") for g in status.get("gpus", [])}
    switching = {
        int(g["index"]): ComputeMode(g["computePartition"])
        for g in spec.get("gpus", [])
        if g.get("computePartition") in _COMPUTE_MODES
        and g["computePartition"] != reported.get(int(g["index"]))
    }
    wanted_memory = str(spec.get("memoryPartition"))
    reloading = (
        MemoryMode(wanted_memory)
        if wanted_memory in _MEMORY_MODES and wanted_memory != status.get("memoryPartition")
        else None
    )
    caps = frozenset(
        MemoryMode(m) for m in status.get("memoryPartitionCaps", []) if m in _MEMORY_MODES
    )
    return NodeSnapshot(
        capacity=capacity_of(gpunode, now=now, stale_after_s=stale_after_s),
        memory_caps=caps or _DEFAULT_CAPS,
        gpu_changed_at={int(k): v for k, v in changed.items() if k.isdigit()},
        memory_changed_at=changed.get(_MEMORY_KEY),
        switching=switching,
        reloading=reloading,
    )


def spec_patch(gpunode: dict[str, Any], decisions: list[Decision], now: float) -> dict[str, Any]:
    """One merge patch for every decision on this node, guarded by its resourceVersion (the
    spec's GPU list is replaced as a whole, so a concurrent edit must not be lost)."""
    spec = gpunode.get("spec") or {}
    gpus = {int(g["index"]): dict(g) for g in spec.get("gpus", [])}
    changed = _changed_at(gpunode)
    patch_spec: dict[str, Any] = {}
    for decision in decisions:
        if isinstance(decision, MemoryChange):
            patch_spec["memoryPartition"] = decision.target.value
            changed[_MEMORY_KEY] = now
        else:
            assert isinstance(decision, ComputeChange)
            entry = gpus.setdefault(decision.gpu, {"index": decision.gpu})
            entry["computePartition"] = decision.target.value
            changed[str(decision.gpu)] = now
    patch_spec["gpus"] = [gpus[i] for i in sorted(gpus)]
    return {
        "metadata": {
            "resourceVersion": gpunode["metadata"]["resourceVersion"],
            "annotations": {CHANGED_AT: json.dumps(changed, sort_keys=True)},
        },
        "spec": patch_spec,
    }


def write(api: KubeApi, gpunode: dict[str, Any], decisions: list[Decision], now: float) -> None:
    name = gpunode["metadata"]["name"]
    api.merge_patch(f"{GPUNODES}/{name}", spec_patch(gpunode, decisions, now))


def now_utc() -> datetime:
    return datetime.now(UTC)


def _changed_at(gpunode: dict[str, Any]) -> dict[str, float]:
    text = ((gpunode.get("metadata") or {}).get("annotations") or {}).get(CHANGED_AT)
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
