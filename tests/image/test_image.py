"""The product image (Containerfile), built by hack/build-image and run with podman.

The production image must start every process's entry point as its non-root user, without
a compiler or pip in it, and stay small; the emulated one (the same plus the MI300X emulator
as its ROCm) must run a real mipart-daemon that a client on the host reaches through the
unix socket it makes in a bind-mounted directory, as mipart-smi reaches the DaemonSet's.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hack.devcluster.binaries import REPO_ROOT
from mipart.agent.server.transport import SOCKET_MODE
from mipart.api.v1 import node_pb2
from mipart.smi.client import Endpoint, stub
from tests.image.conftest import SIZES, Podman

# A cold build (apt, the Debian base, every pip install) runs inside the first test's setup.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

USER = 65532
MAX_SIZE = 3 * 2**29  # 1.5 GiB
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_entry_points_start_in_the_image(podman: Podman) -> None:
    smi = podman.run(podman.image, "mipart-smi", "--help")
    assert smi.startswith("usage: mipart-smi")
    assert "Show and change the MI300X partitions of one node" in smi
    assert "--socket SOCKET" in smi
    daemon = podman.run(podman.image, "mipart-daemon", "--help")
    assert daemon.startswith("usage: mipart-daemon")
    assert "$ROCM_PATH/lib/libamd_smi.so" in daemon
    assert "--state-dir" in daemon
    # The image alone (no command) says what the daemon takes.
    assert podman.run(podman.image).startswith("usage: mipart-daemon")
    for entry_point in ("mipart-extender", "mipart-webhook", "mipart-controller", "mipart-vllm"):
        assert f"usage: {entry_point}" in podman.run(podman.image, entry_point, "--help")


def test_production_image_runs_as_non_root_without_build_tools(podman: Podman) -> None:
    (config,) = json.loads(podman("image", "inspect", podman.image).stdout)
    assert config["Config"]["User"] == f"{USER}:{USER}"
    labels = config["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["Config"]["Env"].count("ROCM_PATH=/opt/rocm") == 1
    found = podman.run(
        podman.image,
        "sh",
        "-c",
        "id -u; id -g; for t in gcc cc make pip pip3 amdsmi-emu; do command -v $t; done; true",
    )
    assert found.split() == [str(USER), str(USER)]


def test_image_size(podman: Podman, request: pytest.FixtureRequest) -> None:
    sizes = {
        tag: int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        for tag in (podman.image, podman.emulated)
    }
    request.config.stash[SIZES] = sizes
    print(*(f"{tag}: {size / 2**20:.0f} MiB" for tag, size in sizes.items()), sep="\n")
    assert sizes[podman.image] < MAX_SIZE
    # The emulator adds its library and CLI, nothing else.
    assert sizes[podman.emulated] - sizes[podman.image] < 2**20


@pytest.fixture
def daemon_in_container(podman: Podman) -> Iterator[Path]:
    """mipart-daemon in the emulated image as its non-root user, its socket and state
    directories bind-mounted from the host as the DaemonSet mounts them; the socket's path
    on the host. The container goes whatever the test's outcome."""
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    host = Path(tempfile.mkdtemp(prefix="mipart-image-"))
    run, state = host / "run", host / "state"
    for path in (run, state):
        path.mkdir(mode=0o750)
        os.chown(path, USER, USER)
    name = f"mipart-image-test-{uuid.uuid4().hex[:8]}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--runtime",
        "runc",
        "--network",
        "none",
        "--volume",
        f"{run}:/run/mipart",
        "--volume",
        f"{state}:/var/lib/mipart",
        "--env",
        "NODE_NAME=image-test",
        podman.emulated,
        "mipart-daemon",
        "--socket",
        "/run/mipart/node.sock",
        "--state-dir",
        "/var/lib/mipart",
        "--metrics-address",
        "off",
        "--poll-interval",
        "0.5",
        "--log-format",
        "json",
    )
    try:
        yield run / "node.sock"
    finally:
        # Shown with the test's report when it fails.
        print(podman("logs", name, check=False).stderr, file=sys.stderr)
        podman("rm", "--force", "--time", "0", name, check=False)
        shutil.rmtree(host, ignore_errors=True)


def get_node(socket: Path, timeout: float = 60) -> node_pb2.Node:
    """GetNode through the socket, with the project's own client, once the daemon serves."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with Endpoint(socket=str(socket)).channel() as channel:
                node: node_pb2.Node = stub(channel).GetNode(node_pb2.GetNodeRequest(), timeout=5)
            if node.gpus:
                return node
            last = node
        except grpc.RpcError as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"the daemon reported no GPUs within {timeout} s; last: {last}")


def test_daemon_in_the_emulated_image_serves_8_mi300x(
    podman: Podman, daemon_in_container: Path
) -> None:
    socket = daemon_in_container
    node = get_node(socket)
    assert node.node_name == "image-test"
    assert not node.hardware_error
    assert node.memory_partition == "NPS1"
    assert len(node.gpus) == 8
    for gpu in node.gpus:
        assert "MI300X" in gpu.market_name
        assert gpu.compute_partition == "SPX"
        assert gpu.memory_bytes == 196592 * 2**20  # what amd-smi reports for an SPX MI300X
        assert len(gpu.partitions) == 1
    assert len({gpu.bdf for gpu in node.gpus}) == 8

    # The socket is the daemon's: its user's, group read/write only (SOCKET_MODE).
    st = socket.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == SOCKET_MODE == 0o660
    assert (st.st_uid, st.st_gid) == (USER, USER)

    # mipart-smi on the host (root) reads the same node through it.
    shown = subprocess.run(
        [sys.executable, "-m", "mipart.smi.main", "--socket", str(socket), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    gpus = json.loads(shown.stdout)["gpus"]
    assert [g["index"] for g in gpus] == list(range(8))
    assert {g["compute_partition"] for g in gpus} == {"SPX"}
