"""Text and JSON renderings of a Node, in the spirit of amd-smi's tables."""

from __future__ import annotations

import json
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


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _xcds(xcds: list[int]) -> str:
    return str(xcds[0]) if len(xcds) == 1 else f"{xcds[0]}-{xcds[-1]}"


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
    part_rows = []
    for g in node.gpus:
        for p in g.partitions:
            part_rows.append(
                [
                    p.id,
                    _xcds(list(p.xcds)),
                    str(p.compute_units),
                    _gib(p.memory_used_bytes, p.memory_bytes),
                    p.memory_pool,
                    f"renderD{p.render_minor}",
                    f"{p.activity_percent}%" if p.HasField("activity_percent") else "N/A",
                    ", ".join(
                        f"{x.name}[{x.pid}] {x.vram_bytes / GIB:.1f} GiB" for x in p.processes
                    )
                    or "-",
                ]
            )
    out += _table(
        ["PARTITION", "XCDS", "CUS", "VRAM USED/TOTAL", "POOL", "RENDER", "UTIL", "PROCESSES"],
        part_rows,
    )
    failures = [f"gpu {g.index}: {g.failure}" for g in node.gpus if g.failure]
    if failures:
        out += ["", "FAILURES", *failures]
    return "\n".join(out)


def render_event(event: pb.OperationEvent) -> str:
    status = f" [{event.hardware_status}]" if event.hardware_status else ""
    return f"[{event.progress:4.0%}] {event.phase:<10} {event.message}{status}"
