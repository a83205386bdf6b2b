"""`hack/cluster`: the test control plane from the shell.

    hack/cluster up [--nodes N]   start it (building the binaries first if needed); prints the
                                  kubeconfig path on stdout, progress on stderr
    hack/cluster down             stop it
    hack/cluster status           components alive, nodes, API URL
    hack/cluster logs COMPONENT   a component's log (etcd, kube-apiserver, ...)
    hack/cluster env              `export KUBECONFIG=...; export PATH=...` for eval

State lives in --dir (default $MIPART_CLUSTER_DIR, else .run/cluster in the repository,
which git ignores).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import COMPONENTS, ControlPlane, print_progress
from hack.devcluster.procs import StartupError

DEFAULT_STATE_DIR = REPO_ROOT / ".run" / "cluster"


def _loaded(state_dir: Path) -> ControlPlane:
    plane = ControlPlane.load(state_dir)
    if plane is None:
        raise SystemExit(f"no cluster in {state_dir}; start one with `hack/cluster up`")
    return plane


def cmd_up(state_dir: Path, nodes: int) -> int:
    try:
        plane = ControlPlane(state_dir).start(nodes=nodes, detach=True, progress=print_progress)
    except StartupError as exc:
        print(f"hack/cluster up failed: {exc}", file=sys.stderr)
        return 1
    info = plane.info
    assert info is not None
    print_progress(
        f"control plane up in {info.startup_seconds:.1f}s at {plane.api_url} with nodes "
        f"{', '.join(plane.node_names)}\n"
        f"  export KUBECONFIG={plane.kubeconfig}\n"
        f"  export PATH={plane.binaries.bin_dir}:$PATH  # kubectl, built with the rest"
    )
    print(plane.kubeconfig)
    return 0


def cmd_down(state_dir: Path) -> int:
    plane = ControlPlane.load(state_dir)
    if plane is None:
        print_progress(f"no cluster in {state_dir}")
        return 0
    plane.stop()
    print_progress(f"stopped; logs kept in {plane.log_dir}")
    return 0


def cmd_status(state_dir: Path) -> int:
    plane = _loaded(state_dir)
    alive = plane.status()
    for name, up in alive.items():
        print(f"{name:24} {'running' if up else 'STOPPED'}")
    print(f"api        {plane.api_url}")
    print(f"kubeconfig {plane.kubeconfig}")
    print(f"nodes      {' '.join(plane.node_names)}")
    print(f"logs       {plane.log_dir}")
    return 0 if all(alive.values()) else 1


def cmd_logs(state_dir: Path, component: str) -> int:
    path = _loaded(state_dir).logs()[component]
    sys.stdout.write(path.read_text(errors="replace"))
    return 0


def cmd_env(state_dir: Path) -> int:
    plane = _loaded(state_dir)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f"export PATH={plane.binaries.bin_dir}:$PATH")
    return 0


def main(argv: list[str] | None = None) -> int:
    # --dir is accepted before or after the command (`hack/cluster up --dir X`).
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir",
        "--state-dir",
        dest="state_dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="state directory (default $MIPART_CLUSTER_DIR or .run/cluster)",
    )
    parser = argparse.ArgumentParser(
        prog="hack/cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[where],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", parents=[where], help="start the control plane")
    up.add_argument("--nodes", type=int, default=2, help="number of fake MI300X nodes")
    commands.add_parser("down", parents=[where], help="stop it")
    commands.add_parser("status", parents=[where], help="show what runs")
    logs = commands.add_parser("logs", parents=[where], help="print a component's log")
    logs.add_argument("component", choices=COMPONENTS)
    commands.add_parser("env", parents=[where], help="print exports for KUBECONFIG and PATH")
    args = parser.parse_args(argv)

    default_dir = Path(os.environ.get("MIPART_CLUSTER_DIR", DEFAULT_STATE_DIR))
    state_dir: Path = getattr(args, "state_dir", default_dir)
    if args.command == "up":
        return cmd_up(state_dir, args.nodes)
    if args.command == "down":
        return cmd_down(state_dir)
    if args.command == "status":
        return cmd_status(state_dir)
    if args.command == "logs":
        return cmd_logs(state_dir, args.component)
    return cmd_env(state_dir)


if __name__ == "__main__":
    sys.exit(main())
