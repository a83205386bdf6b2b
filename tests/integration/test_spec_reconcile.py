"""The daemon acts on its GPUNode.spec: drain, wait for the GPU to empty, switch, report;
as its own service account, over the emulated MI300X, against the real control plane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.node import Node
from hack.devcluster.procs import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def node(control_plane: ControlPlane, emulator_build: Path, tmp_path: Path) -> Iterator[Node]:
    name = control_plane.node_names[1]
    token = control_plane.service_account_kubeconfig("mipart-system", "mipart-daemon")
    daemon = Node(emulator_build, tmp_path)
    daemon.extra_args = ["--kubeconfig", str(token), "--node-name", name, "--heartbeat", "1"]
    daemon.start()
    yield daemon
    daemon.stop()
    kube.custom_objects(control_plane.api_client()).delete_cluster_custom_object(
        *kube.GPUNODES, name
    )


def name_of(node: Node) -> str:
    return node.extra_args[node.extra_args.index("--node-name") + 1]


def status(api: Any, name: str) -> dict[str, Any]:
    return dict(kube.gpunode(api, name).get("status") or {})


def condition(api: Any, name: str, kind: str) -> dict[str, Any]:
    found = [c for c in status(api, name).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


def set_spec(api: Any, name: str, spec: dict[str, Any]) -> int:
    obj = kube.custom_objects(api).patch_cluster_custom_object(*kube.GPUNODES, name, {"spec": spec})
    return int(obj["metadata"]["generation"])


def published(api: Any, name: str) -> None:
    wait_until("GPUNode status", lambda: status(api, name).get("gpuCount") == 8, timeout=60)


def hold_gpu2(api: Any, namespace: str, name: str) -> None:
    pod = kube.bound_pod("holder", name, ["gpu2-spx-0"], 40 * 2**30)
    kube.core(api).create_namespaced_pod(namespace, pod)


def test_spec_switches_an_idle_gpu(node: Node, api: Any) -> None:
    name = name_of(node)
    published(api, name)
    generation = set_spec(api, name, {"gpus": [{"index": 3, "computePartition": "CPX"}]})
    wait_until(
        "GPU 3 in CPX",
        lambda: (
            status(api, name).get("partitionCount") == 15
            and condition(api, name, "LayoutReconciled").get("status") == "True"
        ),
        timeout=30,
    )
    now = status(api, name)
    assert now["gpus"][3]["computePartition"] == "CPX"
    assert len(now["gpus"][3]["partitions"]) == 8
    assert now["observedGeneration"] == generation
    assert condition(api, name, "LayoutReconciled")["reason"] == "Applied"
    assert condition(api, name, "SpecValid")["status"] == "True"
    assert not now["gpus"][3]["drained"]


def test_a_gpu_with_an_allocation_is_drained_first(node: Node, api: Any, namespace: str) -> None:
    name = name_of(node)
    published(api, name)
    hold_gpu2(api, namespace, name)
    set_spec(api, name, {"gpus": [{"index": 2, "computePartition": "CPX"}]})
    wait_until(
        "GPU 2 draining",
        lambda: status(api, name)["gpus"][2]["phase"] == "Draining",
        timeout=30,
    )
    draining = status(api, name)
    assert draining["gpus"][2]["drained"] is True
    assert draining["gpus"][2]["computePartition"] == "SPX"
    reconciled = condition(api, name, "LayoutReconciled")
    assert (reconciled["status"], reconciled["reason"]) == ("False", "Draining")
    assert f"{namespace}/holder" in reconciled["message"]

    # It stays SPX while the pod exists.
    observed: list[tuple[str, bool, str]] = []
    for _ in range(3):
        gpu2 = status(api, name)["gpus"][2]
        observed.append((gpu2["phase"], gpu2["drained"], gpu2["computePartition"]))
        assert gpu2["computePartition"] == "SPX"
        time.sleep(1)  # the daemon polls the hardware every 0.5 s and reconciles every 1 s

    kube.core(api).delete_namespaced_pod("holder", namespace, grace_period_seconds=0)

    def switched() -> bool:
        gpu2 = status(api, name)["gpus"][2]
        step = (gpu2["phase"], gpu2["drained"], gpu2["computePartition"])
        if not observed or observed[-1] != step:
            observed.append(step)
        return step == ("Ready", False, "CPX")

    wait_until("GPU 2 switched to CPX, drain lifted", switched, timeout=60)
    print("phases observed on GPU 2:", observed)
    assert observed[0] == ("Draining", True, "SPX")
    assert condition(api, name, "LayoutReconciled")["reason"] == "Applied"
    events = kube.events(api).list_namespaced_event(
        "default", field_selector=f"regarding.name={name},regarding.kind=GPUNode"
    )
    assert {"Draining", "Applied"} <= {e.reason for e in events.items}


def test_an_invalid_spec_changes_nothing(node: Node, api: Any) -> None:
    name = name_of(node)
    published(api, name)
    generation = set_spec(
        api, name, {"memoryPartition": "NPS4", "gpus": [{"index": 0, "computePartition": "SPX"}]}
    )
    wait_until(
        "SpecValid False",
        lambda: condition(api, name, "SpecValid").get("status") == "False",
        timeout=30,
    )
    message = condition(api, name, "SpecValid")["message"]
    assert "valid combinations" in message
    assert "SPX" in message
    assert "NPS4" in message
    now = status(api, name)
    assert now["observedGeneration"] == generation
    assert now["memoryPartition"] == "NPS1"
    assert {g["computePartition"] for g in now["gpus"]} == {"SPX"}


def test_the_cli_refuses_a_gpu_with_an_allocation(node: Node, api: Any, namespace: str) -> None:
    name = name_of(node)
    published(api, name)
    hold_gpu2(api, namespace, name)
    wait_until(
        "the allocation seen",
        lambda: status(api, name).get("freeMemory") == "1495Gi",
        timeout=30,
    )
    result = node.smi("set", "compute", "CPX", "--gpu", "2")
    assert result.returncode != 0
    assert "FAILED_PRECONDITION" in result.stderr or "precondition" in result.stderr.lower()
    assert f"{namespace}/holder" in result.stderr
    assert status(api, name)["gpus"][2]["computePartition"] == "SPX"


def test_a_new_gpunode_starts_from_the_layout_its_node_labels_pick(
    control_plane: ControlPlane, api: Any, emulator_build: Path, tmp_path: Path
) -> None:
    name = control_plane.node_names[2]
    layouts = tmp_path / "layouts.yaml"
    layouts.write_text(
        "- {matchLabels: {mipart.io/pool: nowhere}, computePartition: DPX}\n"
        "- {matchLabels: {mipart.io/pool: small-models}, memoryPartition: NPS1,"
        " computePartition: CPX}\n"
    )
    core = kube.core(api)
    core.patch_node(name, {"metadata": {"labels": {"mipart.io/pool": "small-models"}}})
    token = control_plane.service_account_kubeconfig("mipart-system", "mipart-daemon")
    daemon = Node(emulator_build, tmp_path)
    daemon.extra_args = [
        "--kubeconfig", str(token), "--node-name", name, "--heartbeat", "1",
        "--layouts", str(layouts),
    ]  # fmt: skip
    daemon.start()
    try:
        wait_until(
            "every GPU in CPX",
            lambda: (
                status(api, name).get("partitionCount") == 64
                and condition(api, name, "LayoutReconciled").get("status") == "True"
            ),
            timeout=60,
        )
        spec = kube.gpunode(api, name)["spec"]
        assert spec["memoryPartition"] == "NPS1"
        assert [g["computePartition"] for g in spec["gpus"]] == ["CPX"] * 8
        # The layout is the first one only: the spec is the desired state from then on, and a
        # restarted daemon finds its GPUNode and leaves the spec alone.
        set_spec(api, name, {"gpus": [{"index": 0, "computePartition": "SPX"}]})
        daemon.stop()
        daemon.start()
        wait_until(
            "GPU 0 back in SPX",
            lambda: status(api, name).get("partitionCount") == 57,
            timeout=60,
        )
        assert kube.gpunode(api, name)["spec"]["gpus"][0]["computePartition"] == "SPX"
    finally:
        daemon.stop()
        core.patch_node(name, {"metadata": {"labels": {"mipart.io/pool": None}}})
        kube.custom_objects(api).delete_cluster_custom_object(*kube.GPUNODES, name)
