"""``mipart-smi``: show a node's MI300X GPUs and partitions, and change them, over gRPC."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from mipart.api.v1 import node_pb2 as pb
from mipart.api.v1.node_pb2_grpc import NodeServiceStub
from mipart.runtime.terminal import program_name, run_quietly
from mipart.smi.client import DEFAULT_SOCKET, Endpoint, stub
from mipart.smi.render import (
    EVENT_CSV,
    GPU_CSV,
    NODE_CSV,
    event_csv_row,
    gpu_csv_row,
    node_csv_rows,
    render_event,
    render_node,
    to_dict,
    to_json,
)
from mipart.smi.select import HELP as GPU_HELP
from mipart.smi.select import GpuSelection, UnknownGpu, gpu_selection

EPILOG = """examples:
  mipart-smi                                  GPUs, then one row per partition and pod on it
  mipart-smi status --gpu 0000:0c:00.0        only that GPU (an index, 0,1, a BDF, a UUID, all)
  mipart-smi --json                           the same as JSON
  mipart-smi status --csv                     one row per partition and pod, header first
  mipart-smi --watch                          redraw on every change
  mipart-smi set compute CPX --gpu 0          8 partitions of 24 GiB / 38 CUs on GPU 0
  mipart-smi set compute QPX --gpu 0,1 --dry-run
  mipart-smi set compute CPX --gpu all --json each GPU's progress, one JSON object a line
  mipart-smi set memory NPS4                  node-wide; every GPU idle; reloads the driver
  mipart-smi drain --gpu 3 --csv              no new allocations on GPU 3; the GPU as CSV

--json and --csv go before or after the command. --gpu takes an index (0), a comma list
(0,1), a BDF (0000:0c:00.0 or 0c:00.0), a UUID, or all; a GPU the node does not have is an
error that lists the GPUs it has.

exit status: 0 ok, 1 the daemon refused or the change failed, 2 bad usage or an unknown GPU,
3 daemon unreachable, 141 the output's reader went away (e.g. | head -1)
"""
STATUS_EPILOG = """examples:
  mipart-smi status --gpu 2                   GPU 2 only
  mipart-smi status --gpu 0000:0c:00.0,3      by BDF, and GPU 3
  mipart-smi status --csv | grep gpu3-        the pods on GPU 3's partitions
  mipart-smi status --watch --json | jq -c '[.gpus[].partitions[].allocations[].pod]'
"""
COMPUTE_EPILOG = """examples:
  mipart-smi set compute CPX --gpu 0          8 partitions of 24 GiB / 38 CUs on GPU 0
  mipart-smi set compute QPX --gpu all --dry-run
  mipart-smi set compute DPX --gpu 0000:0c:00.0 --csv
"""
MEMORY_EPILOG = """examples:
  mipart-smi set memory NPS4 --dry-run        is every GPU idle and in a mode NPS4 allows?
  mipart-smi set memory NPS4 --json           reloads the driver; progress as JSON lines
"""
DRAIN_EPILOG = """examples:
  mipart-smi {name} --gpu 3
  mipart-smi {name} --gpu all --json
"""


def _formats(json_help: str, csv_help: str) -> argparse.ArgumentParser:
    """--json and --csv, accepted before and after the command. They default to SUPPRESS so
    that a subcommand's parser never overwrites what the top level was given."""
    formats = argparse.ArgumentParser(add_help=False)
    group = formats.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    group.add_argument("--csv", action="store_true", default=argparse.SUPPRESS, help=csv_help)
    return formats


def _watch_flag() -> argparse.ArgumentParser:
    watch = argparse.ArgumentParser(add_help=False)
    watch.add_argument(
        "--watch",
        action="store_true",
        default=argparse.SUPPRESS,
        help="keep printing the node as it changes (with --json: one object a line)",
    )
    return watch


def build_parser() -> argparse.ArgumentParser:
    node_formats = _formats(
        "print the node as JSON", "print one row per partition and pod on it, header first"
    )
    event_formats = _formats(
        "print each progress event as a JSON object, one a line",
        "print each progress event as a CSV row, header first",
    )
    gpu_formats = _formats(
        "print each GPU as it is now, one JSON object a line",
        "print each GPU as it is now as a CSV row, header first",
    )
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog=program_name(sys.argv[0], "mipart-smi"),
        description="Show and change the MI300X partitions of one node, through its mipart daemon.",
        epilog=EPILOG,
        formatter_class=raw,
        parents=[
            _formats(
                "print JSON instead of a table (here or after the command)",
                "print CSV, header first (here or after the command)",
            ),
            _watch_flag(),
        ],
    )
    p.add_argument(
        "--socket", default=DEFAULT_SOCKET, help=f"daemon socket (default {DEFAULT_SOCKET})"
    )
    p.add_argument("--address", help="host:port of a daemon listening on mTLS TCP")
    p.add_argument("--tls-cert", type=Path, help="client certificate (PEM), with --address")
    p.add_argument("--tls-key", type=Path, help="client key (PEM), with --address")
    p.add_argument("--tls-ca", type=Path, help="CA of the daemon's certificate, with --address")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    status = sub.add_parser(
        "status",
        help="show the node (the default)",
        description="The GPUs, then one row per partition and pod holding it, then the GPU "
        "processes.",
        epilog=STATUS_EPILOG,
        formatter_class=raw,
        parents=[node_formats, _watch_flag()],
    )
    status.add_argument("--gpu", type=gpu_selection, help=f"show only these {GPU_HELP}")
    set_p = sub.add_parser(
        "set", help="change a compute or memory partition mode", parents=[event_formats]
    )
    set_sub = set_p.add_subparsers(dest="what", metavar="compute|memory", required=True)
    compute = set_sub.add_parser(
        "compute",
        help="switch GPUs to SPX, DPX, QPX or CPX",
        epilog=COMPUTE_EPILOG,
        formatter_class=raw,
        parents=[event_formats],
    )
    compute.add_argument("mode", metavar="MODE", help="SPX, DPX, QPX or CPX")
    compute.add_argument("--gpu", required=True, type=gpu_selection, help=GPU_HELP)
    compute.add_argument("--dry-run", action="store_true", help="describe the change only")
    memory = set_sub.add_parser(
        "memory",
        help="switch the node to NPS1, NPS2 or NPS4",
        epilog=MEMORY_EPILOG,
        formatter_class=raw,
        parents=[event_formats],
    )
    memory.add_argument("mode", metavar="MODE", help="NPS1, NPS2 or NPS4")
    memory.add_argument("--dry-run", action="store_true", help="describe the change only")
    for name, text in (("drain", "stop placing new work on a GPU"), ("undrain", "undo drain")):
        d = sub.add_parser(
            name,
            help=text,
            epilog=DRAIN_EPILOG.format(name=name),
            formatter_class=raw,
            parents=[gpu_formats],
        )
        d.add_argument("--gpu", required=True, type=gpu_selection, help=GPU_HELP)
    return p


class Output:
    """Prints in the format asked for: a table, JSON, or CSV (one header line first)."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self._csv = csv.writer(sys.stdout, lineterminator="\n")
        self._header: list[str] | None = None

    def node(self, snapshot: pb.Node, *, stream: bool = False, clear: bool = False) -> None:
        if self.format == "json":
            # A stream (--watch) prints one object a line, for jq and scripts.
            print(json.dumps(to_dict(snapshot)) if stream else to_json(snapshot), flush=True)
        elif self.format == "csv":
            self._rows(NODE_CSV, node_csv_rows(snapshot))
        else:
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(render_node(snapshot), flush=True)

    def event(self, event: pb.OperationEvent) -> None:
        if self.format == "json":
            print(json.dumps(to_dict(event)), flush=True)
        elif self.format == "csv":
            self._rows(EVENT_CSV, [event_csv_row(event)])
        else:
            print(render_event(event), flush=True)

    def gpu(self, gpu: pb.Gpu) -> None:
        if self.format == "json":
            print(json.dumps(to_dict(gpu)), flush=True)
        elif self.format == "csv":
            self._rows(GPU_CSV, [gpu_csv_row(gpu)])
        else:
            print(f"gpu {gpu.index}: {'drained' if gpu.drained else 'accepting allocations'}")

    def _rows(self, header: list[str], rows: Iterable[list[str]]) -> None:
        if self._header is None:
            self._header = header
            self._csv.writerow(header)
        self._csv.writerows(rows)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    return run_quietly(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    as_json, as_csv = getattr(args, "json", False), getattr(args, "csv", False)
    if as_json and as_csv:
        parser.error("--json and --csv: give one")
    watch = getattr(args, "watch", False)
    if watch and args.command not in (None, "status"):
        parser.error("--watch goes with status only")
    out = Output("json" if as_json else "csv" if as_csv else "table")
    endpoint = Endpoint(args.socket, args.address, args.tls_cert, args.tls_key, args.tls_ca)
    try:
        channel = endpoint.channel()
    except (ValueError, OSError) as err:
        print(f"mipart-smi: {err}", file=sys.stderr)
        return 2
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            print(
                f"mipart-smi: no mipart daemon answers at {endpoint.describe()} "
                f"(waited {args.timeout:.0f} s)",
                file=sys.stderr,
            )
            return 3
        try:
            return _run(args, stub(channel), out, watch=watch)
        except UnknownGpu as err:
            print(f"mipart-smi: {err}", file=sys.stderr)
            return 2
        except grpc.RpcError as err:
            print(f"mipart-smi: {err.code().name}: {err.details()}", file=sys.stderr)
            return 3 if err.code() == grpc.StatusCode.UNAVAILABLE else 1
        except KeyboardInterrupt:
            return 130


def _run(args: argparse.Namespace, node: NodeServiceStub, out: Output, *, watch: bool) -> int:
    if args.command in (None, "status"):
        selection: GpuSelection | None = getattr(args, "gpu", None)
        if watch:
            return _watch(node.Watch(pb.WatchRequest()), selection, out)
        snapshot = node.GetNode(pb.GetNodeRequest(), timeout=args.timeout)
        if selection is not None:
            snapshot = _only(snapshot, selection.resolve(snapshot.gpus, snapshot.node_name))
        out.node(snapshot)
        return 0
    if args.command == "set" and args.what == "memory":
        return _follow(
            node.SetMemoryPartition(
                pb.SetMemoryPartitionRequest(memory_partition=args.mode, dry_run=args.dry_run)
            ),
            out,
        )
    current = node.GetNode(pb.GetNodeRequest(), timeout=args.timeout)
    gpus = args.gpu.resolve(current.gpus, current.node_name)
    if args.command in ("drain", "undrain"):
        call = node.DrainGpu if args.command == "drain" else node.UndrainGpu
        for gpu in gpus:
            out.gpu(call(pb.DrainGpuRequest(gpu_index=gpu), timeout=args.timeout))
        return 0
    status = 0
    for gpu in gpus:
        status |= _follow(
            node.SetComputePartition(
                pb.SetComputePartitionRequest(
                    gpu_index=gpu, compute_partition=args.mode, dry_run=args.dry_run
                )
            ),
            out,
        )
    return status


def _watch(snapshots: Iterator[pb.Node], selection: GpuSelection | None, out: Output) -> int:
    """Print the node on every change (the GPUs selected once, on the first snapshot)."""
    chosen: list[int] | None = None
    for snapshot in snapshots:
        shown = snapshot
        if selection is not None:
            if chosen is None:
                chosen = selection.resolve(snapshot.gpus, snapshot.node_name)
            shown = _only(snapshot, chosen)
        out.node(shown, stream=True, clear=sys.stdout.isatty())
    return 0


def _only(snapshot: pb.Node, gpus: list[int]) -> pb.Node:
    """The node with only ``gpus``, in their order."""
    shown = pb.Node()
    shown.CopyFrom(snapshot)
    by_index = {g.index: g for g in snapshot.gpus}
    del shown.gpus[:]
    shown.gpus.extend(by_index[i] for i in gpus if i in by_index)
    return shown


def _follow(events: Iterator[pb.OperationEvent], out: Output) -> int:
    """Print an operation's progress as it streams; 1 if it ends Failed."""
    last = None
    for event in events:
        last = event
        out.event(event)
    return 1 if last is None or last.phase == "Failed" else 0


if __name__ == "__main__":
    sys.exit(main())
