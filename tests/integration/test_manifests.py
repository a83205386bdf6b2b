"""Everything in manifests/ is accepted by the real API server (schemas, RBAC objects, the
kustomization that turns the scheduler configuration into a ConfigMap)."""

from __future__ import annotations

import pytest
import yaml

from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def test_every_manifest_passes_a_server_side_dry_run(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-k", str(REPO_ROOT / "manifests"), check=False
    )
    assert result.returncode == 0, result.stderr
    applied = result.stdout
    for kind_name in (
        "deployment.apps/mipart-scheduler",
        "deployment.apps/mipart-webhook",
        "daemonset.apps/mipart-daemon",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/mipart",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/mipart",
    ):
        assert kind_name in applied


def test_the_scheduler_configmap_carries_the_extender(control_plane: ControlPlane) -> None:
    rendered = control_plane.kubectl("kustomize", str(REPO_ROOT / "manifests")).stdout
    configmap = next(
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("mipart-scheduler")
    )
    config = yaml.safe_load(configmap["data"]["scheduler-config.yaml"])
    (extender,) = config["extenders"]
    assert extender["nodeCacheCapable"] is True
    assert extender["bindVerb"] == "bind"
    assert extender["managedResources"] == [
        {"name": "mipart.io/partition", "ignoredByScheduler": True}
    ]
    assert config["profiles"][0]["percentageOfNodesToScore"] == 100
