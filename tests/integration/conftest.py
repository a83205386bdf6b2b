"""Fixtures for tests against the real control plane (hack/devcluster/controlplane.py).

One control plane per test session. A failed test gets the tails of the component logs in its
report, next to the captured output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster import images, kube
from hack.devcluster.binaries import REPO_ROOT, ensure_built, is_built
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.kserve import KServe
from hack.devcluster.node import Node
from hack.devcluster.procs import wait_until
from hack.devcluster.realnode import RealNode
from hack.devcluster.stack import Stack
from tests.daemon.agent.test_device_plugin import short_dir, start_with_peer
from tests.support.kserve_services import Services
from tests.support.kubelet_peer import KubeletPeer

_PLANE = pytest.StashKey[ControlPlane]()
_REAL_NODE = pytest.StashKey[RealNode]()


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """The running control plane: `.kubeconfig`, `.api_url`, `.api_client()`, `.node_names`,
    `.log_dir`, `.kubectl(...)`.

    MIPART_TEST_CLUSTER_DIR: where its state and logs go (default .run/test-cluster, kept
    after the run for reading); MIPART_TEST_NODES: how many fake MI300X nodes (default 8).
    """
    state_dir = Path(os.environ.get("MIPART_TEST_CLUSTER_DIR", REPO_ROOT / ".run" / "test-cluster"))
    nodes = int(os.environ.get("MIPART_TEST_NODES", "8"))
    plane = ControlPlane(state_dir)
    request.config.stash[_PLANE] = plane
    plane.start(nodes=nodes)
    yield plane
    plane.stop(keep_logs=True)


@pytest.fixture(scope="module")
def real_node(request: pytest.FixtureRequest, control_plane: ControlPlane) -> Iterator[RealNode]:
    """A real node on the control plane: containerd and a kubelet (hack/devcluster/realnode.py),
    tainted so that no scheduler places other tests' pods there, with the pause image and the
    busybox image (`images.BUSYBOX_IMAGE`, for pods with imagePullPolicy: Never) imported.

    Per module (it starts in under 2 s): the Node is gone again before the next module, whose
    tests may count the cluster's nodes. Its state and logs go next to the control plane's:
    MIPART_TEST_CLUSTER_DIR + "-real-node". Needs root; skipped without it.
    """
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (mounts, cgroups, runc)")
    node = RealNode(control_plane, Path(f"{control_plane.state_dir}-real-node"))
    request.config.stash[_REAL_NODE] = node
    node.start()
    try:
        node.import_image(images.busybox_image(node.state_dir / "images").archive)
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Any:
    """A `kubernetes.client.ApiClient` with cluster-admin rights."""
    return control_plane.api_client()


@pytest.fixture
def namespace(api: Any) -> Generator[str, None, None]:
    """A fresh namespace whose `default` service account exists, so pods can be created."""
    core = kube.core(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(body={"metadata": {"name": name}})
    wait_until(
        f"service account default in {name}",
        lambda: core.read_namespaced_service_account("default", name) is not None,
        timeout=60,
    )
    yield name
    # Pods hold partitions (their allocations) until they are gone, and the next test may use
    # the same nodes: delete them now and wait, then leave the rest to the namespace controller.
    # Deployments first, or their ReplicaSets would make the pods again.
    kube.apps(api).delete_collection_namespaced_deployment(name, propagation_policy="Background")
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    wait_until(
        f"the pods of {name} to be gone",
        lambda: not core.list_namespaced_pod(name).items,
        timeout=120,
    )
    core.delete_namespace(name)


@pytest.fixture
def plugged(
    control_plane: ControlPlane, emulator_build: Path, tmp_path: Path
) -> Iterator[tuple[Node, KubeletPeer, str]]:
    """A daemon with its device plugin on a control-plane node, as the daemon's service
    account, and the kubelet peer it registered with."""
    name = control_plane.node_names[1]
    token = control_plane.service_account_kubeconfig("mipart-system", "mipart-daemon")
    root = short_dir()
    node = Node(emulator_build, tmp_path)
    peer = start_with_peer(
        node, root, "--kubeconfig", str(token), "--node-name", name, "--heartbeat", "60"
    )
    yield node, peer, name
    node.stop()
    peer.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack(
    control_plane: ControlPlane, api: Any, emulator_build: Path, tmp_path: Path
) -> Iterator[Stack]:
    """mipart's components on the control plane, each as its own service account; stopped
    (and their GPUNodes and webhook configurations removed) after the test."""
    s = Stack(control_plane, emulator_build, tmp_path)
    try:
        yield s
    finally:
        s.stop(api)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the Kubernetes binaries before the first test when a collected test needs them.

    Building inside the fixture would count against the first test's timeout (pyproject sets
    300 s; a cold build takes longer), and pytest would swallow the progress.
    """
    if not any("control_plane" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    if is_built():
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        ensure_built()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    plane = item.config.stash.get(_PLANE, None)
    if report.failed and plane is not None:
        report.sections.append(("control plane logs (tails)", plane.log_tails()))
    real_node = item.config.stash.get(_REAL_NODE, None)
    if report.failed and real_node is not None and "real_node" in getattr(item, "fixturenames", ()):
        report.sections.append(("real node logs (tails)", real_node.log_tails()))
    return report


@pytest.fixture(scope="module")
def kserve(
    control_plane: ControlPlane, api: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KServe]:
    """KServe's real controller manager on the control plane (RawDeployment mode)."""
    peer = KServe(control_plane, tmp_path_factory.mktemp("kserve"))
    peer.start(api)
    yield peer
    peer.stop()


@pytest.fixture
def services(kserve: KServe, api: Any, namespace: str, tmp_path: Path) -> Iterator[Services]:
    """InferenceServices in the test's namespace, deleted (their Deployments gone) before the
    namespace is cleaned up."""
    made = Services(api, namespace, tmp_path)
    yield made
    made.delete_all()
