"""The device plugin as the kubelet sees it: registration, slots, Allocate, refusals and
re-registration, between a real daemon (over the emulated MI300X) and the kubelet peer.

PreStartContainer's happy path needs pods with allocations from a real API server:
tests/integration/test_device_plugin.py.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hack.devcluster.node import Node
from hack.devcluster.procs import wait_until
from mipart.contract.resources import PARTITION_RESOURCE
from mipart.kubelet.deviceplugin.v1beta1 import api_pb2 as dp
from mipart.kubelet.deviceplugin.v1beta1 import api_pb2_grpc as dp_grpc
from tests.support.kubelet_peer import AdmissionError, KubeletPeer

# The plugin reads allocations from the API server only inside PreStartContainer once a holder
# is found, which these tests never reach; an address nothing listens on keeps it honest.
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: none}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def short_dir() -> Path:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))


def start_with_peer(node: Node, root: Path, *extra: str) -> KubeletPeer:
    """The kubelet peer first (as on a node), then the daemon with its plugin pointed at it."""
    peer = KubeletPeer(
        root / "device-plugins",
        root / "pod-resources" / "kubelet.sock",
        root / "cdi",
        PARTITION_RESOURCE,
    )
    peer.start()
    node.extra_args = [
        "--device-plugin-dir",
        str(peer.plugin_dir),
        "--pod-resources-socket",
        str(peer.pod_resources_socket),
        "--cdi-dir",
        str(peer.cdi_dir),
        "--launcher-dir",
        str(root / "launcher"),
        *extra,
    ]
    node.start()
    assert peer.registered.wait(15), f"plugin did not register:\n{node.log()[-4000:]}"
    return peer


@pytest.fixture
def plugged(emulator_build: Path, tmp_path: Path) -> Iterator[tuple[Node, KubeletPeer]]:
    root = short_dir()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
    node = Node(emulator_build, tmp_path)
    peer = start_with_peer(node, root, "--kubeconfig", str(kubeconfig), "--heartbeat", "60")
    yield node, peer
    node.stop()
    peer.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_registers_and_advertises_healthy_slots(plugged: tuple[Node, KubeletPeer]) -> None:
    _, peer = plugged
    assert peer.endpoints == ["mipart.sock"]
    assert peer.options is not None
    assert peer.options.pre_start_required
    devices = peer.wait_devices(64)
    # 8 SPX partitions, 8 slots each.
    assert sorted(devices) == sorted(f"slot-{n}" for n in range(64))


def test_allocate_answers_only_with_the_slot_indirection(
    plugged: tuple[Node, KubeletPeer],
) -> None:
    _, peer = plugged
    peer.wait_devices(64)
    with grpc.insecure_channel(f"unix://{peer.plugin_dir / 'mipart.sock'}") as channel:
        stub = dp_grpc.DevicePluginStub(channel)
        response = stub.Allocate(
            dp.AllocateRequest(
                container_requests=[dp.ContainerAllocateRequest(devices_ids=["slot-7", "slot-3"])]
            ),
            timeout=10,
        )
        (answer,) = response.container_responses
        assert [c.name for c in answer.cdi_devices] == [
            "mipart.io/slot=slot-7",
            "mipart.io/slot=slot-3",
        ]
        assert not answer.envs
        assert not answer.devices
        assert not answer.mounts
        assert not answer.annotations
        with pytest.raises(grpc.RpcError) as err:
            stub.Allocate(
                dp.AllocateRequest(
                    container_requests=[dp.ContainerAllocateRequest(devices_ids=["gpu0-spx-0"])]
                ),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pre_start_for_a_slot_nobody_holds_fails_clearly(
    plugged: tuple[Node, KubeletPeer],
) -> None:
    _, peer = plugged
    peer.wait_devices(64)
    with pytest.raises(AdmissionError) as err:
        peer.pre_start(["slot-5"])
    message = str(err.value)
    assert "FAILED_PRECONDITION" in message
    assert "no container holds slot-5" in message
    assert not list(peer.cdi_dir.glob("*.json"))


def test_re_registers_when_the_kubelet_restarts(plugged: tuple[Node, KubeletPeer]) -> None:
    _, peer = plugged
    peer.wait_devices(64)
    peer.restart()  # deletes mipart.sock too, as the kubelet's CleanupPluginDirectory does
    assert peer.registered.wait(10), "no registration with the new kubelet.sock"
    assert peer.endpoints == ["mipart.sock", "mipart.sock"]
    wait_until("slots listed again", lambda: len(peer.healthy_devices()) == 64, timeout=10)
    assert (peer.plugin_dir / "mipart.sock").is_socket()
