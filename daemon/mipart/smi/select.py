"""``--gpu``, as amd-smi takes it: an index, a comma list, a BDF, a UUID, or ``all``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mipart.api.v1 import node_pb2 as pb

HELP = "GPU(s): an index (0), a comma list (0,1), a BDF (0000:0c:00.0), a UUID, or all"
SYNTAX = "--gpu takes an index, a comma list, a BDF, a UUID or all"
ALL = "all"
# A PCI address with or without its domain: 0000:0c:00.0 or 0c:00.0.
_BDF = re.compile(r"(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


class UnknownGpu(LookupError):
    """Names what was given and lists the GPUs the node has."""


@dataclass(frozen=True, slots=True)
class GpuSelection:
    text: str  # as given, for messages
    items: tuple[str, ...]  # in the order given

    def resolve(self, gpus: Sequence[pb.Gpu], node_name: str = "") -> list[int]:
        """The indexes of the GPUs selected, in the order given, each once."""
        chosen: list[int] = []
        unknown: list[str] = []
        for item in self.items:
            found = [g.index for g in gpus] if item.lower() == ALL else _match(item, gpus)
            if not found:
                unknown.append(item)
            chosen += [i for i in found if i not in chosen]
        if unknown:
            raise UnknownGpu(_unknown(self.text, unknown, gpus, node_name))
        return chosen


def gpu_selection(text: str) -> GpuSelection:
    """argparse ``type=``: the syntax only; which GPUs exist is the daemon's to say."""
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r}: no GPU given; {SYNTAX}")
    if ALL in (x.lower() for x in items) and len(items) > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: 'all' stands alone")
    return GpuSelection(text, items)


def _match(given: str, gpus: Sequence[pb.Gpu]) -> list[int]:
    item = given.lower()
    if item.isascii() and item.isdigit():
        return [g.index for g in gpus if g.index == int(item)]
    if _BDF.fullmatch(item):
        bdf = item if item.count(":") == 2 else f"0000:{item}"
        return [g.index for g in gpus if g.bdf.lower() == bdf]
    return [g.index for g in gpus if g.uuid and g.uuid.lower() == item]


def _partition_of(given: str, gpus: Sequence[pb.Gpu]) -> str | None:
    """A partition's own BDF or UUID (amd-smi lists each partition as a device) names it."""
    item = given.lower()
    if _BDF.fullmatch(item) and item.count(":") == 1:
        item = f"0000:{item}"
    for g in gpus:
        for p in g.partitions:
            if item in (p.bdf.lower(), p.uuid.lower()):
                return f"{given} is partition {p.id} of GPU {g.index}"
    return None


def _unknown(text: str, unknown: list[str], gpus: Sequence[pb.Gpu], node_name: str) -> str:
    where = f"node {node_name}" if node_name else "this node"
    head = f"--gpu {text}: no GPU {', '.join(map(repr, unknown))} on {where}"
    hints = [h for u in unknown if (h := _partition_of(u, gpus)) is not None]
    if hints:
        head += " (" + "; ".join(hints) + ")"
    if not gpus:
        return f"{head}: it reports no GPUs"
    lines = [f"  {g.index:<3} {g.bdf:<13} {g.uuid}" for g in gpus]
    return "\n".join([f"{head}; {SYNTAX}. Its GPUs (index, BDF, UUID):", *lines])
