"""KServe's real controller manager on the control plane, as a peer of mipart's KServe tests.

KServe runs in its RawDeployment ("Standard") mode, which needs no Knative, Istio or KEDA: an
InferenceService becomes a Deployment (and a Service and an HPA), whose ReplicaSet makes the
pods that mipart's webhook then sees. The binary, its CRDs and its ConfigMap come from the Go
module hack/build-k8s.sh builds (KSERVE_VERSION in hack/versions.env). KServe's own admission
webhooks (its defaulter, validators and pod mutator) are not registered: the manager serves
them, but nothing mipart does depends on them.

The manager runs with the cluster administrator's kubeconfig: it is a peer, and its RBAC is
KServe's business.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from hack.devcluster import kube
from hack.devcluster.binaries import kserve_dir
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import Process, free_ports, wait_until
from mipart.contract.kserve import (
    INFERENCESERVICE_GROUP,
    INFERENCESERVICE_VERSION,
)

NAMESPACE = "kserve"
CONFIGMAP = "inferenceservice-config"
INFERENCESERVICES = (INFERENCESERVICE_GROUP, INFERENCESERVICE_VERSION)


def configmap() -> dict[str, Any]:
    """KServe's own ConfigMap, set for RawDeployment with no ingress (no Istio, no Gateway)."""
    source = kserve_dir() / "inferenceservice-config.yaml"
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    data: dict[str, str] = doc["data"]
    data.pop("_example", None)
    data["deploy"] = json.dumps({"defaultDeploymentMode": "Standard"})
    ingress = json.loads(data["ingress"])
    ingress.update(disableIngressCreation=True, disableIstioVirtualHost=True)
    data["ingress"] = json.dumps(ingress)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"], "data": data}


@dataclass
class KServe:
    plane: ControlPlane
    workdir: Path
    process: Process | None = field(default=None, init=False)

    def start(self, api: Any) -> None:
        crds = self.workdir / "kserve-crds.yaml"
        crds.write_text(self._kubectl("kustomize", str(kserve_dir() / "crd")))
        self._kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        # Before the manager starts: it exits when a kind it watches is not served yet.
        self._kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        core = kube.core(api)
        if NAMESPACE not in {n.metadata.name for n in core.list_namespace().items}:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
        body = configmap()
        try:
            core.replace_namespaced_config_map(CONFIGMAP, NAMESPACE, body)
        except client.ApiException as err:
            if err.status != 404:
                raise
            core.create_namespaced_config_map(NAMESPACE, body)
        # The webhook server cannot be turned off, and reads its certificate from
        # $TMPDIR/k8s-webhook-server/serving-certs.
        tmp = self.workdir / "kserve-tmp"
        certs = tmp / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True)
        pair = self.plane.issue_serving_cert("kserve-webhook")
        (certs / "tls.crt").write_bytes(pair.cert.read_bytes())
        (certs / "tls.key").write_bytes(pair.key.read_bytes())
        metrics, probe, webhook = free_ports(3)
        self.process = Process.start(
            "kserve-manager",
            [
                self.plane.binaries("kserve-manager"),
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--metrics-addr=127.0.0.1:{metrics}",
                f"--health-probe-addr=127.0.0.1:{probe}",
                f"--webhook-port={webhook}",
            ],
            self.workdir / "kserve-manager.log",
            detach=False,
            env={"TMPDIR": str(tmp)},
        )
        wait_until(
            "KServe's manager ready",
            lambda: _answers(f"http://127.0.0.1:{probe}/readyz"),
            timeout=60,
            process=self.process,
        )

    def _kubectl(self, *args: str) -> str:
        done = self.plane.kubectl(*args, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False
