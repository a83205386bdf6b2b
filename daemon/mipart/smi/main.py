"""``mipart-smi``: show a node's MI300X GPUs and partitions, and change them, over gRPC."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc

from mipart.api.v1 import node_pb2 as pb
from mipart.smi.client import DEFAULT_SOCKET, Endpoint, stub
from mipart.smi.render import render_event, render_node, to_dict, to_json

EPILOG = """examples:
  mipart-smi                                  table of GPUs and partitions
  mipart-smi --json                           the same as JSON
  mipart-smi --watch                          redraw on every change
  mipart-smi set compute CPX --gpu 0          8 partitions of 24 GiB / 38 CUs on GPU 0
  mipart-smi set compute QPX --gpu 0,1 --dry-run
  mipart-smi set memory NPS4                  node-wide; every GPU idle; reloads the driver
  mipart-smi drain --gpu 3                    no new allocations on GPU 3

exit status: 0 ok, 1 the daemon refused or the change failed, 2 bad usage, 3 daemon unreachable
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-smi",
        description="Show and change the MI300X partitions of one node, through its mipart daemon.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--socket", default=DEFAULT_SOCKET, help=f"daemon socket (default {DEFAULT_SOCKET})"
    )
    p.add_argument("--address", help="host:port of a daemon listening on mTLS TCP")
    p.add_argument("--tls-cert", type=Path, help="client certificate (PEM), with --address")
    p.add_argument("--tls-key", type=Path, help="client key (PEM), with --address")
    p.add_argument("--tls-ca", type=Path, help="CA of the daemon's certificate, with --address")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--watch", action="store_true", help="keep printing the node as it changes")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("status", help="show the node (the default)")
    set_p = sub.add_parser("set", help="change a compute or memory partition mode")
    set_sub = set_p.add_subparsers(dest="what", metavar="compute|memory", required=True)
    compute = set_sub.add_parser("compute", help="switch GPUs to SPX, DPX, QPX or CPX")
    compute.add_argument("mode", metavar="MODE", help="SPX, DPX, QPX or CPX")
    compute.add_argument("--gpu", required=True, type=_gpu_list, help="GPU index(es): 0 or 0,1,2")
    compute.add_argument("--dry-run", action="store_true", help="describe the change only")
    memory = set_sub.add_parser("memory", help="switch the node to NPS1, NPS2 or NPS4")
    memory.add_argument("mode", metavar="MODE", help="NPS1, NPS2 or NPS4")
    memory.add_argument("--dry-run", action="store_true", help="describe the change only")
    for name, text in (("drain", "stop placing new work on a GPU"), ("undrain", "undo drain")):
        d = sub.add_parser(name, help=text)
        d.add_argument("--gpu", required=True, type=_gpu_list, help="GPU index(es)")
    return p


def _gpu_list(text: str) -> list[int]:
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a GPU index list like 0 or 0,1"
        ) from None
    if not gpus or any(g < 0 for g in gpus):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indexes are integers >= 0")
    return gpus


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
            return _run(args, stub(channel))
        except grpc.RpcError as err:
            print(f"mipart-smi: {err.code().name}: {err.details()}", file=sys.stderr)
            return 3 if err.code() == grpc.StatusCode.UNAVAILABLE else 1
        except KeyboardInterrupt:
            return 130


def _run(args: argparse.Namespace, node: object) -> int:
    from mipart.api.v1.node_pb2_grpc import NodeServiceStub  # noqa: PLC0415

    assert isinstance(node, NodeServiceStub)
    if args.command in (None, "status"):
        if args.watch:
            for snapshot in node.Watch(pb.WatchRequest()):
                if args.json:  # one object per line, for jq and scripts
                    print(json.dumps(to_dict(snapshot)), flush=True)
                else:
                    _show(snapshot, as_json=False, clear=sys.stdout.isatty())
            return 0
        _show(node.GetNode(pb.GetNodeRequest(), timeout=args.timeout), args.json)
        return 0
    if args.command in ("drain", "undrain"):
        call = node.DrainGpu if args.command == "drain" else node.UndrainGpu
        for gpu in args.gpu:
            result = call(pb.DrainGpuRequest(gpu_index=gpu), timeout=args.timeout)
            print(
                to_json(result)
                if args.json
                else f"gpu {gpu}: {'drained' if result.drained else 'accepting allocations'}"
            )
        return 0
    if args.what == "memory":
        return _follow(
            node.SetMemoryPartition(
                pb.SetMemoryPartitionRequest(memory_partition=args.mode, dry_run=args.dry_run)
            ),
            args.json,
        )
    status = 0
    for gpu in args.gpu:
        status |= _follow(
            node.SetComputePartition(
                pb.SetComputePartitionRequest(
                    gpu_index=gpu, compute_partition=args.mode, dry_run=args.dry_run
                )
            ),
            args.json,
        )
    return status


def _show(snapshot: pb.Node, as_json: bool, clear: bool = False) -> None:
    text = to_json(snapshot) if as_json else render_node(snapshot)
    if clear:
        sys.stdout.write("\x1b[H\x1b[2J")
    print(text, flush=True)


def _follow(events: Iterator[pb.OperationEvent], as_json: bool) -> int:
    """Print an operation's progress as it streams; 1 if it ends Failed."""
    last = None
    for event in events:
        last = event
        if as_json:
            print(json.dumps(to_dict(event)), flush=True)
        else:
            print(render_event(event), flush=True)
    return 1 if last is None or last.phase == "Failed" else 0


if __name__ == "__main__":
    sys.exit(main())
