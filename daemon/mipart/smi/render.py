"""Text, JSON and CSV renderings of a Node, in the spirit of amd-smi's tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from google.protobuf.json_format import MessageToDict

from mipart.api.v1 import node_pb2 as pb

GIB = 2**30


def to_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def to_json(message: Any) -> str:
    return json.dumps(to_dict(message), indent=2, sort_keys=False)


def _gib(used: int, total: int) -> str:
    return f"{used / GIB:.1f}/{total / GIB:.1f} GiB"


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def render_node(node: pb.Node) -> str:
    caps = ", ".join(node.memory_partition_caps) or "?"
    head = (
        f"node {node.node_name}   memory partition {node.memory_partition or '?'} (supports {caps})"
    )
    if node.pending_memory_partition:
        head += f"   pending {node.pending_memory_partition} (driver reload)"
    out = [head]
    if node.recovering:
        out.append("recovering: finishing an interrupted change / restoring the desired layout")
    if node.hardware_error:
        out.append(f"hardware error: {node.hardware_error}")
    if node.HasField("operation"):
        op = node.operation
        out.append(
            f"operation {op.operation_id}: {op.kind} -> {op.target}  {op.phase} "
            f"{op.progress:.0%}  {op.message}"
        )
    out.append("")
    gpu_rows = []
    for g in node.gpus:
        util = [p.activity_percent for p in g.partitions if p.HasField("activity_percent")]
        gpu_rows.append(
            [
                str(g.index),
                g.bdf,
                g.compute_partition,
                g.memory_partition,
                g.phase + (" (drained)" if g.drained else ""),
                str(len(g.partitions)),
                _gib(g.memory_used_bytes, g.memory_bytes),
                f"{sum(util) / len(util):.0f}%" if util else "N/A",
                f"{g.temperature_c:.0f}°C" if g.HasField("temperature_c") else "N/A",
                f"{g.power_w:.0f} W" if g.HasField("power_w") else "N/A",
            ]
        )
    out += _table(
        [
            "GPU",
            "BDF",
            "COMPUTE",
            "MEMORY",
            "PHASE",
            "PARTS",
            "VRAM USED/TOTAL",
            "UTIL",
            "TEMP",
            "POWER",
        ],
        gpu_rows,
    )
    out.append("")
    out += _table(
        ["GPU", "PARTITION", "MODE", "MEMORY USED/TOTAL", "POD", "LIMIT", "POD USES"],
        partition_rows(node),
    )
    out.append("")
    out += _processes(node)
    failures = [f"gpu {g.index}: {g.failure}" for g in node.gpus if g.failure]
    if failures:
        out += ["", "FAILURES", *failures]
    return "\n".join(out)


def partition_rows(node: pb.Node) -> list[list[str]]:
    """One row per partition and pod holding it (a partition no pod holds: one row, ``-``)."""
    rows = []
    for g, p, a in _partition_allocations(node):
        memory = _gib(p.memory_used_bytes, p.memory_bytes)
        if a is None:
            rows.append([str(g.index), p.id, p.compute_partition, memory, "-", "-", "-"])
            continue
        uses = _size(a.memory_used_bytes) if a.HasField("memory_used_bytes") else "N/A"
        rows.append(
            [
                str(g.index),
                p.id,
                p.compute_partition,
                memory,
                a.pod,
                _size(a.memory_limit_bytes),
                uses,
            ]
        )
    return rows


def _processes(node: pb.Node) -> list[str]:
    rows = [
        [str(g.index), p.id, str(x.pid), x.name, _size(x.vram_bytes)]
        for g in node.gpus
        for p in g.partitions
        for x in p.processes
    ]
    if not rows:
        return ["no GPU processes"]
    return _table(["GPU", "PARTITION", "PID", "PROCESS", "VRAM"], rows)


def _partition_allocations(
    node: pb.Node,
) -> Iterator[tuple[pb.Gpu, pb.Partition, pb.PartitionAllocation | None]]:
    for g in node.gpus:
        for p in g.partitions:
            if not p.allocations:
                yield g, p, None
            for a in p.allocations:
                yield g, p, a


# --csv: integers in bytes, empty cells where there is nothing, one header line first.
NODE_CSV = [
    "gpu",
    "partition",
    "mode",
    "memory_used_bytes",
    "memory_bytes",
    "pod",
    "pod_uid",
    "sharing",
    "memory_limit_bytes",
    "pod_memory_used_bytes",
]
GPU_CSV = [
    "gpu",
    "bdf",
    "uuid",
    "compute_partition",
    "memory_partition",
    "phase",
    "drained",
    "memory_used_bytes",
    "memory_bytes",
]
EVENT_CSV = [
    "operation_id",
    "kind",
    "target",
    "phase",
    "progress",
    "gpus",
    "dry_run",
    "hardware_status",
    "message",
]


def node_csv_rows(node: pb.Node) -> list[list[str]]:
    """One row per partition and pod holding it, as for the table."""
    rows = []
    for g, p, a in _partition_allocations(node):
        row = [str(g.index), p.id, p.compute_partition, str(p.memory_used_bytes)]
        row.append(str(p.memory_bytes))
        if a is None:
            row += [""] * 5
        else:
            used = str(a.memory_used_bytes) if a.HasField("memory_used_bytes") else ""
            row += [a.pod, a.pod_uid, a.sharing, str(a.memory_limit_bytes), used]
        rows.append(row)
    return rows


def gpu_csv_row(g: pb.Gpu) -> list[str]:
    return [
        str(g.index),
        g.bdf,
        g.uuid,
        g.compute_partition,
        g.memory_partition,
        g.phase,
        str(g.drained).lower(),
        str(g.memory_used_bytes),
        str(g.memory_bytes),
    ]


def event_csv_row(e: pb.OperationEvent) -> list[str]:
    return [
        e.operation_id,
        e.kind,
        e.target,
        e.phase,
        f"{e.progress:.2f}",
        " ".join(map(str, e.gpu_indices)),
        str(e.dry_run).lower(),
        e.hardware_status,
        e.message,
    ]


def render_event(event: pb.OperationEvent) -> str:
    status = f" [{event.hardware_status}]" if event.hardware_status else ""
    return f"[{event.progress:4.0%}] {event.phase:<10} {event.message}{status}"
