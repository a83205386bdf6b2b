"""KServe InferenceServices as their users meet mipart, with KServe's real controller manager
(hack/devcluster/kserve.py, RawDeployment mode): an InferenceService becomes a Deployment whose
pods mipart's webhook mutates and the extender places on partitions, with the annotations
KServe gives them; a bad mipart annotation is refused at apply, with the message its pods
would get; replicas come and go through the InferenceService's own spec."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hack.devcluster import chart, kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.kserve import INFERENCESERVICES, KServe
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack
from mipart.contract.annotations import ALLOCATION, MEMORY, MODEL, QOS, QUEUE
from mipart.contract.kserve import (
    INFERENCESERVICE_KIND,
    INFERENCESERVICE_PLURAL,
)
from mipart.contract.resources import PARTITION_RESOURCE
from mipart.launcher import main as launcher
from tests.daemon.launcher.test_launcher import LLAMA_8B_CONFIG
from tests.daemon.launcher.test_vllm_parser import vllm_parse
from tests.integration.test_extender import check_no_overcommit
from tests.support.kserve_services import Services

pytestmark = pytest.mark.integration

GI = 2**30


def refusal(err: client.ApiException) -> str:
    """What an admission webhook said, without the API server's framing."""
    message: str = json.loads(err.body or "{}")["message"]
    return message.split("denied the request: ", 1)[-1]


def test_an_inferenceservice_runs_on_a_partition_with_both_annotation_paths(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane, services: Services
) -> None:
    """The service's annotations and the predictor's both reach the pod; the predictor's win
    a clash. The pod is mipart's: its scheduler, its partition request, its allocation."""
    for name in control_plane.node_names[:2]:
        stack.start_daemon(name)
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()

    services.create(
        services.manifest(
            "chat",
            annotations={MEMORY: "20Gi", QOS: "batch", "team": "search"},
            predictor={MEMORY: "40Gi"},
        )
    )
    (pod,) = services.bound("chat", 1)
    annotations = pod["metadata"]["annotations"]
    assert annotations[MEMORY] == "40Gi"  # the predictor's, over the service's 20Gi
    assert annotations[QOS] == "batch"  # the service's own
    assert annotations["team"] == "search"
    assert pod["spec"]["schedulerName"] == "mipart-scheduler"
    container = pod["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["resources"]["limits"][PARTITION_RESOURCE] == "1"
    allocation = json.loads(annotations[ALLOCATION])
    assert allocation["memoryBytes"] == 40 * GI
    assert allocation["node"] == pod["spec"]["nodeName"] in control_plane.node_names[:2]
    check_no_overcommit(api, [pod])


def test_a_bad_mipart_annotation_is_refused_at_apply_with_the_pods_message(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane, services: Services
) -> None:
    """Refused where the user applies it, not pod by pod in a ReplicaSet's Events; on update
    too, and the service stays as it was."""
    stack.start_webhook(api)
    core = kube.core(api)
    for where, bad in (
        ("service", {"mipart.io/memroy": "20Gi"}),
        ("predictor", {MEMORY: "20Gi", ALLOCATION: '{"v": 1}'}),
        ("predictor", {QOS: "batch"}),
    ):
        pod = {
            "metadata": {"name": "probe", "annotations": bad},
            "spec": {"containers": [{"name": "kserve-container", "image": "vllm"}]},
        }
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(namespace, pod)
        pods_message = refusal(refused.value)
        manifest = (
            services.manifest("bad", annotations=bad)
            if where == "service"
            else services.manifest("bad", predictor=bad)
        )
        applied = control_plane.kubectl(
            "apply", "-n", namespace, "-f", str(services.write(manifest)), check=False
        )
        assert applied.returncode != 0
        assert (
            'admission webhook "inferenceservices.validate.mipart.io" denied the request: '
            f"the predictor's pods would be refused: {pods_message}"
        ) in applied.stderr, applied.stderr

    good = services.manifest("good", annotations={MEMORY: "20Gi"})
    applied = control_plane.kubectl("apply", "-n", namespace, "-f", str(services.write(good)))
    assert applied.returncode == 0
    good["metadata"]["annotations"]["mipart.io/qos"] = "Latency"
    applied = control_plane.kubectl(
        "apply", "-n", namespace, "-f", str(services.write(good)), check=False
    )
    assert applied.returncode != 0
    assert "mipart.io/qos: 'Latency' is not valid" in applied.stderr
    kept = services.objects.get_namespaced_custom_object(
        *INFERENCESERVICES, namespace, INFERENCESERVICE_PLURAL, "good"
    )
    assert QOS not in kept["metadata"]["annotations"]


def test_replicas_come_and_go_through_the_services_spec(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane, services: Services
) -> None:
    """1 -> 3 -> 1 replicas through minReplicas/maxReplicas: each new replica gets its own
    partition, and those a scale-down frees go to the pod that was waiting for them."""
    # Three SPX GPUs hold a 150Gi replica each; the other five are CPX (24Gi partitions).
    (node,) = control_plane.node_names[:1]
    stack.start_daemon(node, dict.fromkeys(range(3, 8), "CPX"))
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()

    services.create(services.manifest("big", annotations={MEMORY: "150Gi"}))
    (first,) = services.bound("big", 1)

    def gpus(pods: list[dict[str, Any]]) -> set[str]:
        return {
            part
            for p in pods
            for part in json.loads(p["metadata"]["annotations"][ALLOCATION])["partitions"]
        }

    services.scale("big", 3)
    three = services.bound("big", 3)
    assert len(gpus(three)) == 3  # a partition each
    assert gpus([first]) <= gpus(three)  # the first replica stays where it was
    check_no_overcommit(api, three)

    services.create(services.manifest("next", annotations={MEMORY: "150Gi"}))
    wait_until("next waiting", lambda: len(services.pods("next")) == 1, timeout=60)
    (waiting,) = services.pods("next")
    assert not waiting["spec"].get("nodeName")  # every SPX GPU is taken

    services.scale("big", 1)
    (kept,) = services.bound("big", 1)
    (placed,) = services.bound("next", 1)
    freed = gpus(three) - gpus([kept])
    assert gpus([placed]) <= freed
    check_no_overcommit(api, [kept, placed])


def test_a_queued_replica_says_why_on_its_inferenceservice(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane, services: Services
) -> None:
    """The user of KServe watches the InferenceService: the controller's Queued Event goes on
    it too (with its UID, so kubectl describe shows it), naming the pod; mipart-queue names
    the InferenceService of each pod."""
    (node,) = control_plane.node_names[:1]
    stack.start_daemon(node, dict.fromkeys(range(8), "CPX"))  # no partition holds 150Gi
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()
    stack.start_controller("--repartition", "off")  # and none is made for it

    services.create(
        services.manifest("wide", predictor={MEMORY: "150Gi", QOS: "batch", QUEUE: "true"})
    )
    wait_until("the replica queued", lambda: len(services.pods("wide")) == 1, timeout=60)
    (pod,) = services.pods("wide")
    service = services.objects.get_namespaced_custom_object(
        *INFERENCESERVICES, namespace, INFERENCESERVICE_PLURAL, "wide"
    )

    def on_the_service() -> list[Any]:
        selector = (
            f"involvedObject.kind={INFERENCESERVICE_KIND},involvedObject.name=wide,"
            f"involvedObject.uid={service['metadata']['uid']},reason=Queued"
        )
        return list(kube.core(api).list_namespaced_event(namespace, field_selector=selector).items)

    wait_until("a Queued Event on the InferenceService", lambda: bool(on_the_service()), timeout=30)
    (event,) = on_the_service()
    assert event.message.startswith(f"pod {pod['metadata']['name']}: batch queue, position 1 of 1")
    assert event.reporting_component == "mipart.io/controller"
    described = control_plane.kubectl("describe", "inferenceservice", "wide", "-n", namespace)
    assert "Queued" in described.stdout
    assert f"pod {pod['metadata']['name']}: batch queue" in described.stdout

    shown = subprocess.run(
        [sys.executable, "-m", "mipart.controller.cli", "--kubeconfig",
         str(control_plane.kubeconfig), "-n", namespace, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (row,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert row["pod"] == f"{namespace}/{pod['metadata']['name']}"
    assert row["inferenceService"] == "wide"


RUNTIMES = ("serving.kserve.io", "v1alpha1", "clusterservingruntimes")
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def runtime(kserve: KServe, api: Any) -> Iterator[dict[str, Any]]:
    """The chart's ClusterServingRuntime, as a user with an image of their own installs it."""
    values = {"kserve": {"runtime": {"enabled": True, "image": "vllm-rocm-mipart:test"}}}
    (made,) = [o for o in chart.render(values) if o["kind"] == "ClusterServingRuntime"]
    objects = kube.custom_objects(api)
    objects.create_cluster_custom_object(*RUNTIMES, made)
    yield made
    objects.delete_cluster_custom_object(*RUNTIMES, made["metadata"]["name"])


def test_the_charts_runtime_gives_a_kserve_pod_a_sized_vllm_that_vllm_accepts(
    stack: Stack,
    api: Any,
    namespace: str,
    control_plane: ControlPlane,
    services: Services,
    runtime: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """An InferenceService that names the runtime writes no command: its pod runs
    mipart-vllm with the runtime's arguments and its own model args, as KServe merges them.
    That command, run as a dry run with the pod's allocation, gives a vLLM command line that
    vLLM's own parser accepts, sized to the partition; so does the storageUri form, whose
    model KServe's storage initializer leaves in /mnt/models (a directory here)."""
    (node,) = control_plane.node_names[:1]
    stack.start_daemon(node, dict.fromkeys(range(8), "CPX"))
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()

    model = {
        "modelFormat": {"name": "vllm"},
        "runtime": runtime["metadata"]["name"],
        "args": ["--model", LLAMA, "--max-model-len", "8k"],
    }
    services.create(services.manifest("llama", predictor={MODEL: LLAMA}, model=model))
    (pod,) = services.bound("llama", 1)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "vllm-rocm-mipart:test"
    assert container["command"] == ["mipart-vllm", "--default-model", "/mnt/models"]
    # The runtime's arguments, {{.Name}} filled in, then the InferenceService's.
    assert container["args"] == [
        "serve", "--served-model-name", "llama", "--port", "8080",
        "--model", LLAMA, "--max-model-len", "8k",
    ]  # fmt: skip

    # The allocation the device plugin would hand the container, from the pod and its GPUNode.
    allocation = json.loads(pod["metadata"]["annotations"][ALLOCATION])
    (partition,) = allocation["partitions"]
    status = kube.gpunode(api, node)["status"]
    (geometry,) = [p for g in status["gpus"] for p in g["partitions"] if p["id"] == partition]
    given = [
        "--partitions", partition,
        "--memory-limit", str(allocation["memoryBytes"]),
        "--partition-memory", str(geometry["memoryBytes"]),
        "--memory-pools", f"{partition.split('-')[0]}-pool{geometry['memoryPool']}",
    ]  # fmt: skip

    def dry_run(command: list[str], args: list[str]) -> list[str]:
        code = launcher.main(["--dry-run", *given, *command[1:], *args], env={})
        out, err = capsys.readouterr()
        assert code == 0, err
        return shlex.split(out.strip())

    with_model = dry_run(container["command"], container["args"])
    # The storageUri form: no --model, the model's directory where the runtime looks.
    models = tmp_path / "models"
    models.mkdir()
    (models / "config.json").write_text(json.dumps(LLAMA_8B_CONFIG))
    from_storage = dry_run(
        ["mipart-vllm", "--default-model", str(models)],
        [a for a in container["args"] if a not in ("--model", LLAMA)],
    )
    parsed = vllm_parse([with_model, from_storage])
    for values, served in zip(parsed, (LLAMA, str(models)), strict=True):
        assert values["model"] == served
        assert values["served_model_name"] == ["llama"]
        assert values["port"] == 8080
        assert values["max_model_len"] == 8000
        assert 0 < float(str(values["gpu_memory_utilization"])) < 1
