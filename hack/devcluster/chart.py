"""mipart's Helm chart (manifests/charts/mipart), rendered by the real helm. The chart is the one
source of every installed object: the local cluster installs its CRDs, service accounts, RBAC
and PriorityClasses, and runs mipart's kube-scheduler with the chart's scheduler configuration,
so the components run on the test cluster exactly as the chart would run them."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from hack.devcluster.binaries import REPO_ROOT, ensure_built, kserve_dir

CHART = REPO_ROOT / "manifests" / "charts" / "mipart"
CRDS = CHART / "crds"
# The namespace the chart is installed into, here and in docs/install.md.
NAMESPACE = "mipart-system"
RELEASE = "mipart"
# What the components need to run as the chart runs them; the workloads themselves are not
# applied (the test harness starts the processes on the host).
ACCESS_KINDS = frozenset(
    {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "PriorityClass"}
)
SCHEDULER_CONFIGMAP = "mipart-scheduler-config"


def helm() -> str:
    """The cached helm binary (built with the Kubernetes binaries by hack/build-k8s.sh)."""
    return ensure_built()("helm")


def render(
    values: dict[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    api_versions: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """`helm template` of the chart: its objects, in helm's install order. api_versions are the
    APIs the chart may assume the cluster serves (cert-manager.io/v1, say)."""
    argv = [helm(), "template", RELEASE, str(CHART), "--namespace", namespace]
    for api in api_versions:
        argv += ["--api-versions", api]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
        yaml.safe_dump(values or {}, values_file)
        values_file.flush()
        result = subprocess.run(
            [*argv, "--values", values_file.name], capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def default_objects() -> tuple[dict[str, Any], ...]:
    """The chart with its default values (cached: rendering takes helm a fraction of a second,
    but the harness asks often)."""
    return tuple(render())


def access_objects(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] in ACCESS_KINDS]


def scheduler_config(objects: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The KubeSchedulerConfiguration the chart gives mipart's kube-scheduler."""
    for obj in default_objects() if objects is None else objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == SCHEDULER_CONFIGMAP:
            config: dict[str, Any] = yaml.safe_load(obj["data"]["scheduler-config.yaml"])
            return config
    raise LookupError(f"the chart renders no ConfigMap {SCHEDULER_CONFIGMAP}")


def write(objects: Iterable[dict[str, Any]], path: Path) -> Path:
    """The objects as one multi-document YAML file, for kubectl apply -f."""
    path.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
    return path


# The peers' CRDs, from their Go modules at the versions hack/versions.env pins: where in the
# module each keeps them, and which the chart's objects need.
PEER_CRDS = {
    "CERT_MANAGER_VERSION": (
        "github.com/cert-manager/cert-manager",
        "deploy/crds",
        ("cert-manager.io_certificates.yaml", "cert-manager.io_issuers.yaml"),
    ),
    "PROMETHEUS_OPERATOR_VERSION": (
        "github.com/prometheus-operator/prometheus-operator",
        "example/prometheus-operator-crd",
        ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml"),
    ),
}


def peer_crds() -> list[Path]:
    """The CRD files of cert-manager, the Prometheus Operator and KServe that the chart's
    optional objects are instances of (downloaded once into the Go module cache)."""
    versions = _pinned_versions()
    files: list[Path] = []
    for key, (module, folder, names) in PEER_CRDS.items():
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{versions[key]}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"go mod download {module}@{versions[key]}:\n{result.stdout}")
        directory = Path(json.loads(result.stdout)["Dir"]) / folder
        files += [directory / name for name in names]
    # KServe's, kept beside the KServe manager that hack/build-k8s.sh builds from its module.
    return [*files, kserve_dir() / "crd" / "full" / "serving.kserve.io_clusterservingruntimes.yaml"]


def _pinned_versions() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO_ROOT / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}
