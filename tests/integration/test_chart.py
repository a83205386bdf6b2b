"""The Helm chart (manifests/charts/mipart) with the real helm and the real apiserver: lint and
render every documented values combination, refuse bad values by name, pass a server-side
dry run, and install, upgrade and uninstall on a control plane of its own."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devcluster import chart
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.kwok import GPU_PRODUCT_LABEL
from hack.devcluster.procs import wait_until
from mipart.contract.annotations import (
    ALLOCATION,
    MEMORY,
    MODEL,
    PLANNED_MODE,
    PLANNED_PARTITIONS,
    PREFIX,
)
from mipart.contract.resources import PARTITION_RESOURCE
from mipart.controller.main import build_parser, flag_problems
from mipart.webhook.mutate import PRIORITY_CLASSES

pytestmark = pytest.mark.integration

# The combinations docs/install.md documents, each checked the same way.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "existing-scheduler": {"scheduler": {"mode": "existing"}},
    "existing-scheduler-tls": {
        "scheduler": {
            "mode": "existing",
            "existing": {"tls": {"secretName": "mipart-extender-tls"}},
        }
    },
    "cert-manager": {"tls": {"mode": "cert-manager"}},
    "builtin-tls": {"tls": {"mode": "builtin"}},
    "layouts": {
        "daemon": {
            "layouts": [
                {
                    "matchLabels": {"mipart.io/pool": "small-models"},
                    "memoryPartition": "NPS4",
                    "computePartition": "CPX",
                },
                {"matchLabels": {}, "memoryPartition": "NPS1", "computePartition": "SPX"},
            ]
        }
    },
    "monitoring": {
        "monitoring": {"serviceMonitor": True, "podMonitor": True, "labels": {"release": "prom"}}
    },
    "single-replicas": {
        "controller": {"replicas": 1},
        "webhook": {"replicas": 1},
        "scheduler": {"replicas": 1},
    },
    "node-feature-rule": {"daemon": {"nodeFeatureRule": True}},
    "kserve-runtime": {"kserve": {"runtime": {"enabled": True, "image": "vllm-rocm-mipart:1"}}},
    "host-network": {
        "daemon": {"hostNetwork": True, "env": [{"name": "HTTPS_PROXY", "value": "http://p:3128"}]}
    },
}
# Node Feature Discovery's CRD is not published as a Go module: its objects are rendered and
# linted, not sent to the apiserver.
NOT_ON_THIS_APISERVER = {"NodeFeatureRule"}


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [chart.helm(), *args]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def by_kind(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_helm_lint_passes(combination: str, tmp_path: Path) -> None:
    result = helm(
        "lint", "--strict", str(chart.CHART), "-f", values_file(tmp_path, COMBINATIONS[combination])
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_rendered_object_passes_a_server_side_dry_run(
    combination: str, control_plane: ControlPlane, peer_crds: None, tmp_path: Path
) -> None:
    objects = chart.render(COMBINATIONS[combination])
    assert objects
    sendable = [o for o in objects if o["kind"] not in NOT_ON_THIS_APISERVER]
    path = chart.write(sendable, tmp_path / "rendered.yaml")
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(sendable)


def test_each_mode_renders_what_it_says(tmp_path: Path) -> None:
    kinds = {name: {o["kind"] for o in chart.render(v)} for name, v in COMBINATIONS.items()}
    assert "Certificate" in kinds["cert-manager"]
    assert "Certificate" not in kinds["builtin-tls"]
    assert {"ServiceMonitor", "PodMonitor"} <= kinds["monitoring"]
    assert "NodeFeatureRule" in kinds["node-feature-rule"]
    # With no cluster to ask, "auto" finds neither cert-manager nor NFD.
    assert "Certificate" not in kinds["default"]
    assert "NodeFeatureRule" not in kinds["default"]
    assert "PodDisruptionBudget" not in kinds["single-replicas"]
    existing = chart.render(COMBINATIONS["existing-scheduler"])
    assert "Deployment" not in {
        o["kind"] for o in existing if o["metadata"]["name"] == "mipart-scheduler"
    }
    extender = by_kind(existing, "DaemonSet", "mipart-extender")["spec"]["template"]["spec"]
    assert extender["hostNetwork"] is True
    (container,) = extender["containers"]
    assert "--listen=127.0.0.1:8888" in container["command"]
    assert "--scheduler-lease=kube-system/kube-scheduler" in container["command"]
    # The cluster's scheduler identifies as its host name: the extender must not override it.
    assert "env" not in container
    assert not any(flag.startswith("--tls-") for flag in container["command"])

    # With a Secret, only kube-scheduler's client certificate reaches the verbs; the probes
    # move to the plain status port, and the snippet tells kube-scheduler to use HTTPS.
    tls = chart.render(COMBINATIONS["existing-scheduler-tls"])
    extender = by_kind(tls, "DaemonSet", "mipart-extender")["spec"]["template"]["spec"]
    (container,) = extender["containers"]
    assert {
        "--tls-cert=/etc/mipart/tls/tls.crt",
        "--tls-key=/etc/mipart/tls/tls.key",
        "--client-ca=/etc/mipart/tls/ca.crt",
        "--status-listen=127.0.0.1:8889",
    } <= set(container["command"])
    assert container["livenessProbe"]["httpGet"]["port"] == 8889
    assert extender["volumes"] == [
        {"name": "tls", "secret": {"secretName": "mipart-extender-tls", "defaultMode": 0o440}}
    ]
    snippet = by_kind(tls, "ConfigMap", "mipart-scheduler-snippet")["data"]
    (entry,) = yaml.safe_load(snippet["extenders.yaml"])
    assert entry["urlPrefix"] == "https://127.0.0.1:8888"
    assert entry["enableHTTPS"] is True
    assert set(entry["tlsConfig"]) == {"certFile", "keyFile", "caFile"}


def test_auto_modes_follow_the_clusters_apis() -> None:
    kinds = {
        o["kind"]
        for o in chart.render(api_versions=["cert-manager.io/v1", "nfd.k8s-sigs.io/v1alpha1"])
    }
    assert {"Certificate", "Issuer", "NodeFeatureRule"} <= kinds
    webhook = by_kind(chart.render(api_versions=["cert-manager.io/v1"]), *MUTATING)
    assert webhook["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "mipart-system/mipart-webhook"
    }


MUTATING = ("MutatingWebhookConfiguration", "mipart")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"daemon": {"memoryLimitAction": "kill"}}, "/daemon/memoryLimitAction"),
        ({"controler": {"replicas": 2}}, "controler"),
        ({"scheduler": {"mode": "default"}}, "/scheduler/mode"),
        ({"tls": {"mode": "none"}}, "/tls/mode"),
        ({"controller": {"replicas": 0}}, "/controller/replicas"),
        ({"daemon": {"layouts": [{"matchLabels": {}}]}}, "/daemon/layouts/0"),
        (
            {"daemon": {"layouts": [{"matchLabels": {}, "computePartition": "TPX"}]}},
            "/daemon/layouts/0/computePartition",
        ),
        ({"daemon": {"env": [{"value": "x"}]}}, "/daemon/env/0"),
        ({"daemon": {"devicePluginDir": "device-plugins"}}, "/daemon/devicePluginDir"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    values: dict[str, Any], named: str, tmp_path: Path
) -> None:
    result = helm("template", "t", str(chart.CHART), "-f", values_file(tmp_path, values))
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def test_priority_classes_match_the_webhook() -> None:
    classes = {
        o["metadata"]["name"]: (o["value"], o["preemptionPolicy"])
        for o in chart.default_objects()
        if o["kind"] == "PriorityClass"
    }
    assert classes == {name: (value, policy) for name, value, policy in PRIORITY_CLASSES.values()}


@pytest.mark.parametrize("combination", ["default", "existing-scheduler"])
def test_the_admission_policies_name_the_writers_and_the_contracts_keys(combination: str) -> None:
    """The policies let each internal annotation's writer, and only it, write it: the
    controller, and the service account the extender runs as in this scheduler mode, in the
    release's namespace. Every key their CEL tests is one mipart.contract defines."""
    objects = chart.render(COMBINATIONS[combination], namespace="gpu-infra")
    policies = {
        o["metadata"]["name"]: o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"
    }
    bound = {o["spec"]["policyName"]: o["spec"]["validationActions"] for o in objects
             if o["kind"] == "ValidatingAdmissionPolicyBinding"}  # fmt: skip
    assert set(policies) == {
        "mipart-pod-create",
        "mipart-pod-annotations",
        "mipart-pod-binding",
        "mipart-daemon-own-gpunode",
        "mipart-daemon-own-pods",
        "mipart-controller-pods",
    }
    assert bound == {name: ["Deny"] for name in policies}
    # Each component's own writes are checked against its own account in this namespace.
    for name, account in (
        ("mipart-daemon-own-gpunode", "mipart-daemon"),
        ("mipart-daemon-own-pods", "mipart-daemon"),
        ("mipart-controller-pods", "mipart-controller"),
    ):
        (condition,) = policies[name]["spec"]["matchConditions"]
        assert f"'system:serviceaccount:gpu-infra:{account}'" in condition["expression"]
    (extender,) = [
        o["spec"]["template"]["spec"]["serviceAccountName"]
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
        and any(c["command"][0] == "mipart-extender"
                for c in o["spec"]["template"]["spec"]["containers"])
    ]  # fmt: skip
    binding_rule = json.dumps(policies["mipart-pod-binding"]["spec"]["validations"])
    assert f"system:serviceaccount:gpu-infra:{extender}" in binding_rule
    annotation_rules = json.dumps(policies["mipart-pod-annotations"]["spec"]["validations"])
    assert "system:serviceaccount:gpu-infra:mipart-controller" in annotation_rules
    expressions = " ".join(
        json.dumps([p["spec"].get(part) for part in ("variables", "matchConditions")])
        + " ".join(v["expression"] for v in p["spec"]["validations"])
        for p in policies.values()
    )
    tested = set(re.findall(r"'(mipart\.io/[^']*)'", expressions))
    assert tested == {PREFIX, PARTITION_RESOURCE, MEMORY, MODEL, ALLOCATION, PLANNED_MODE,
                      PLANNED_PARTITIONS}, tested  # fmt: skip


def test_the_controllers_command_line_is_valid_and_elects_a_leader() -> None:
    deployment = by_kind(list(chart.default_objects()), "Deployment", "mipart-controller")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "mipart-controller"
    args = build_parser().parse_args(container["command"][1:])
    assert flag_problems(args) == []
    assert args.leader_elect == "on"
    assert args.leader_elect_lease == "mipart-system/mipart-controller"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # The Role lets it keep exactly that Lease.
    role = by_kind(list(chart.default_objects()), "Role", "mipart-controller:leader-election")
    assert {"resourceNames": ["mipart-controller"], "verbs": ["get", "update"]}.items() <= next(
        r for r in role["rules"] if "resourceNames" in r
    ).items()


def test_the_scheduler_configuration_carries_the_extender() -> None:
    config = chart.scheduler_config()
    (extender,) = config["extenders"]
    assert extender["nodeCacheCapable"] is True
    assert extender["bindVerb"] == "bind"
    assert extender["ignorable"] is False
    assert extender["managedResources"] == [
        {"name": "mipart.io/partition", "ignoredByScheduler": True}
    ]
    assert config["profiles"] == [
        {"schedulerName": "mipart-scheduler", "percentageOfNodesToScore": 100}
    ]
    assert config["leaderElection"]["resourceName"] == "mipart-scheduler"


def test_the_daemonset_mounts_what_the_device_plugin_needs() -> None:
    daemonset = by_kind(list(chart.default_objects()), "DaemonSet", "mipart-daemon")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for path, host_path in (
        ("/var/lib/kubelet/device-plugins", "/var/lib/kubelet/device-plugins"),
        ("/var/lib/kubelet/pod-resources", "/var/lib/kubelet/pod-resources"),
        ("/var/run/cdi", "/var/run/cdi"),
        ("/run/mipart", "/run/mipart"),
    ):
        assert host[mounts[path]["name"]] == host_path
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    flags = container["command"]
    assert "--device-plugin-dir=/var/lib/kubelet/device-plugins" in flags
    assert "--cdi-dir=/var/run/cdi" in flags
    # The label the daemon selects is the one the NodeFeatureRule sets, and the one the
    # extender and the test nodes use.
    assert pod["nodeSelector"] == {GPU_PRODUCT_LABEL: "MI300X"}
    rule = by_kind(
        chart.render({"daemon": {"nodeFeatureRule": True}}), "NodeFeatureRule", "mipart-mi300x"
    )
    assert rule["spec"]["rules"][0]["labels"] == {GPU_PRODUCT_LABEL: "MI300X"}


def test_moved_host_directories_are_mounted_where_the_daemon_names_them() -> None:
    """The CDI spec of each partition names its pod's launcher socket directory as the daemon
    sees it, and the runtime mounts that path from the host: the socket directory must be the same path on both
    sides. The device-plugin directory does not follow kubeletDir (the kubelet fixes it)."""
    values = {"daemon": {"socketDir": "/run/gpu/mipart", "kubeletDir": "/data/kubelet"}}
    daemonset = by_kind(chart.render(values), "DaemonSet", "mipart-daemon")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted = {m["mountPath"]: host.get(m["name"]) for m in container["volumeMounts"]}

    assert mounted["/run/gpu/mipart"] == "/run/gpu/mipart"
    assert "--launcher-dir=/run/gpu/mipart/launcher" in container["command"]
    assert "--socket=/run/gpu/mipart/node.sock" in container["command"]
    assert mounted["/var/lib/kubelet/pod-resources"] == "/data/kubelet/pod-resources"
    assert mounted["/var/lib/kubelet/device-plugins"] == "/var/lib/kubelet/device-plugins"
    assert "hostNetwork" not in pod


def test_layouts_reach_the_daemon() -> None:
    objects = chart.render(COMBINATIONS["layouts"])
    configmap = by_kind(objects, "ConfigMap", "mipart-daemon-layouts")
    assert (
        yaml.safe_load(configmap["data"]["layouts.yaml"])
        == COMBINATIONS["layouts"]["daemon"]["layouts"]
    )
    (container,) = by_kind(objects, "DaemonSet", "mipart-daemon")["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--layouts=/etc/mipart/layouts.yaml" in container["command"]


@pytest.fixture(scope="module")
def peer_crds(control_plane: ControlPlane) -> None:
    """cert-manager's, the Prometheus Operator's and KServe's ClusterServingRuntime CRDs, so
    that the chart's objects for them are checked by the apiserver like every other."""
    for path in chart.peer_crds():
        control_plane.kubectl("apply", "--server-side", "-f", str(path))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


# --- install, upgrade, uninstall ------------------------------------------------------------


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own: the chart's webhook configurations (failurePolicy Fail,
    no webhook behind them here) must not meet the other tests' pods."""
    plane = ControlPlane(tmp_path_factory.mktemp("chart-plane"))
    plane.start(nodes=2, with_mipart=False)
    yield plane
    plane.stop(keep_logs=True)


def release_objects(plane: ControlPlane) -> set[str]:
    """Every object left with the chart's part-of label, as kind/namespace/name."""
    result = plane.kubectl(
        "get",
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,clusterroles,"
        "clusterrolebindings,priorityclasses,poddisruptionbudgets,"
        "mutatingwebhookconfigurations,validatingwebhookconfigurations,crd",
        "-A",
        "-l",
        "app.kubernetes.io/part-of=mipart",
        "-o",
        "json",
    )
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in json.loads(result.stdout)["items"]
    }


def test_install_upgrade_uninstall(own_plane: ControlPlane, tmp_path: Path) -> None:
    kubeconfig = own_plane.kubeconfig
    install = helm(
        "install", chart.RELEASE, str(chart.CHART),
        "--namespace", chart.NAMESPACE, "--create-namespace", "--wait", "--timeout", "180s",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    assert "mipart 0.1.0 is installed in mipart-system" in install.stdout  # NOTES.txt
    installed = release_objects(own_plane)
    for expected in (
        "DaemonSet/mipart-system/mipart-daemon",
        "Deployment/mipart-system/mipart-controller",
        "Deployment/mipart-system/mipart-scheduler",
        "Deployment/mipart-system/mipart-webhook",
        "MutatingWebhookConfiguration//mipart",
        "PodDisruptionBudget/mipart-system/mipart-webhook",
        "PriorityClass//mipart-latency",
    ):
        assert expected in installed
    # The daemon's pods went where the label is: every MI300X node.
    daemonset = json.loads(
        own_plane.kubectl(
            "get", "daemonset", "-n", chart.NAMESPACE, "mipart-daemon", "-o", "json"
        ).stdout
    )
    assert daemonset["status"]["numberReady"] == len(own_plane.node_names)

    # What the builtin certificate path writes while running: it must survive an upgrade.
    ca_bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    patch = [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca_bundle}]
    own_plane.kubectl(
        "patch", "mutatingwebhookconfiguration", "mipart", "--type=json", "-p", json.dumps(patch)
    )
    # A GPUNode, as a daemon would create one: it outlives the release.
    gpunode = {
        "apiVersion": "mipart.io/v1alpha1",
        "kind": "GPUNode",
        "metadata": {"name": own_plane.node_names[0]},
        "spec": {},
    }
    subprocess.run(
        [own_plane.binaries("kubectl"), "--kubeconfig", str(kubeconfig), "create", "-f", "-"],
        input=json.dumps(gpunode), text=True, check=True, capture_output=True,
    )  # fmt: skip

    upgrade = helm(
        "upgrade", chart.RELEASE, str(chart.CHART), "--namespace", chart.NAMESPACE,
        "--wait", "--timeout", "180s",
        "-f", values_file(tmp_path, {"controller": {"replicas": 3, "defragment": "on"}}),
        kubeconfig=kubeconfig,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    controller = json.loads(
        own_plane.kubectl(
            "get", "deployment", "-n", chart.NAMESPACE, "mipart-controller", "-o", "json"
        ).stdout
    )
    assert controller["spec"]["replicas"] == 3
    assert "--defragment=on" in controller["spec"]["template"]["spec"]["containers"][0]["command"]
    wait_until(
        "3 controller replicas ready",
        lambda: (
            json.loads(
                own_plane.kubectl(
                    "get", "deployment", "-n", chart.NAMESPACE, "mipart-controller", "-o", "json"
                ).stdout
            )["status"].get("readyReplicas")
            == 3
        ),
        timeout=60,
    )
    mutating = json.loads(
        own_plane.kubectl("get", "mutatingwebhookconfiguration", "mipart", "-o", "json").stdout
    )
    assert mutating["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle

    uninstall = helm(
        "uninstall", chart.RELEASE, "--namespace", chart.NAMESPACE, "--wait",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    assert uninstall.returncode == 0, uninstall.stderr
    # What docs/install.md says stays: the CRD (helm never deletes crds/) and so every GPUNode.
    assert release_objects(own_plane) == set()
    crd = own_plane.kubectl("get", "crd", "gpunodes.mipart.io", check=False)
    assert crd.returncode == 0
    left = own_plane.kubectl("get", "gpunodes", "-o", "name").stdout.split()
    assert left == [f"gpunode.mipart.io/{own_plane.node_names[0]}"]


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_no_pod_of_the_chart_is_sent_to_the_webhook(combination: str) -> None:
    """The webhook's matchConditions send every pod with a mipart.io/ annotation to it: one on
    the chart's own pods would make the scheduler's (and the webhook's own) pods wait for a
    webhook that may not be up."""
    for obj in chart.render(COMBINATIONS[combination]):
        template = (obj.get("spec") or {}).get("template")
        if template is None:
            continue
        annotations = template["metadata"].get("annotations") or {}
        assert not [k for k in annotations if k.startswith("mipart.io/")], obj["metadata"]["name"]


def test_the_daemons_metrics_listen_on_the_pods_address_only() -> None:
    """Where the Service and the readiness probe reach them, not on every address of a host
    (daemon.hostNetwork): the pod's IP, from the downward API."""
    for values in ({}, COMBINATIONS["host-network"]):
        pod = by_kind(chart.render(values), "DaemonSet", "mipart-daemon")["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert "--metrics-address=$(POD_IP):9400" in container["command"]
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
