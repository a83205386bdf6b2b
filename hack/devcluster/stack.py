"""mipart's own components on the test control plane, each as its own service account:
daemons over emulated MI300X publishing GPUNodes, the admission webhook, the extender."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import ApiException

from hack.devcluster import chart, kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.node import Node
from hack.devcluster.procs import Process, free_ports, wait_until
from hack.devcluster.readiness import http_ok
from mipart.contract.annotations import MEMORY
from mipart.contract.resources import PARTITION_RESOURCE

# The extender's --stale-after in the tests: a GPUNode whose heartbeat is older is not ready.
EXTENDER_STALE_AFTER_S = 30


def mipart_extender_argv(plane: ControlPlane, kubeconfig: Path) -> list[str]:
    """mipart-extender where the scheduler's configuration says, as it says."""
    return [
        sys.executable,
        "-m",
        "mipart.scheduler_extender.main",
        *plane.extender.extender_flags(),
        "--kubeconfig",
        str(kubeconfig),
        "--log-format",
        "json",
        "--stale-after",
        str(EXTENDER_STALE_AFTER_S),
    ]


def start_extender_process(
    plane: ControlPlane, name: str, argv: list[str], log: Path, *, detach: bool = False
) -> Process:
    """Start an extender (argv) and wait until it answers /readyz on its status port."""
    extender = Process.start(name, argv, log, detach=detach)
    wait_until(
        f"{name} to serve",
        lambda: http_ok(plane.extender.status_url("/readyz")),
        timeout=60,
        process=extender,
    )
    return extender


@dataclass
class Stack:
    plane: ControlPlane
    emulator: Path
    workdir: Path
    daemons: dict[str, Node] = field(default_factory=dict)
    extender: Process | None = None
    webhook: Process | None = None
    controller: Process | None = None
    controller_metrics: str = ""
    # The chart's admission policies and their bindings, once start_webhook created them.
    admission_policies: list[dict[str, Any]] = field(default_factory=list)
    # The components outlive this process (hack/demo --keep); record() says where they are.
    detach: bool = False

    # -- daemons --------------------------------------------------------------------------

    def start_daemon(self, node_name: str, compute: dict[int, str] | None = None) -> Node:
        """A daemon for a kwok node, its GPUs set to ``compute`` (GPU -> mode; others SPX)."""
        # Bound to a pod on its node, as a DaemonSet pod's token is: the chart's policy lets
        # a daemon write only the GPUNode of the node its token names.
        token = self.plane.service_account_kubeconfig(
            "mipart-system", "mipart-daemon", node=node_name
        )
        node = Node(self.emulator, self.workdir / node_name)
        node.tmp.mkdir(parents=True, exist_ok=True)
        node.extra_args = [
            "--kubeconfig",
            str(token),
            "--node-name",
            node_name,
            "--heartbeat",
            "5",
            "--poll-interval",
            "2",
        ]
        node.start()
        by_mode: dict[str, list[str]] = {}
        for gpu, mode in (compute or {}).items():
            by_mode.setdefault(mode, []).append(str(gpu))
        for mode, gpus in by_mode.items():
            node.smi_ok("set", "compute", mode, "--gpu", ",".join(gpus))
        self.daemons[node_name] = node
        return node

    def wait_published(self, api: Any) -> None:
        def all_current() -> bool:
            for name, node in self.daemons.items():
                status = kube.gpunode(api, name).get("status", {})
                want = sum(len(g["partitions"]) for g in node.show()["gpus"])
                if status.get("partitionCount") != want:
                    return False
            return True

        wait_until("GPUNodes published", all_current, timeout=60)

    # -- webhook --------------------------------------------------------------------------

    def start_webhook(self, api: Any) -> None:
        cert = self.plane.issue_serving_cert("mipart-webhook")
        (port,) = free_ports(1)
        self.webhook = Process.start(
            "mipart-webhook",
            [
                sys.executable,
                "-m",
                "mipart.webhook.main",
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-cert",
                str(cert.cert),
                "--tls-key",
                str(cert.key),
                "--log-format",
                "json",
            ],
            self.workdir / "webhook.log",
            detach=self.detach,
        )
        ca = base64.b64encode(self.plane.ca_cert.read_bytes()).decode()
        admission = kube.admission_registration(api)
        configurations = [
            copy.deepcopy(obj)
            for obj in chart.default_objects()
            if obj["kind"] in {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
        ]
        for doc in configurations:
            for hook in doc["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                # The chart points at the in-cluster Service; here the webhook is local.
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
            create = (
                admission.create_mutating_webhook_configuration
                if doc["kind"] == "MutatingWebhookConfiguration"
                else admission.create_validating_webhook_configuration
            )
            create(doc)
        wait_until(
            "the webhook to answer",
            lambda: _webhook_answers(api),
            timeout=30,
            process=self.webhook,
        )
        self._start_admission_policies(api)

    def _start_admission_policies(self, api: Any) -> None:
        """The chart's ValidatingAdmissionPolicies, which ship with the webhook; in force once
        the API server refuses a pod that asks for the partition resource directly."""
        admission = kube.admission_registration(api)
        creators = {
            "ValidatingAdmissionPolicy": admission.create_validating_admission_policy,
            "ValidatingAdmissionPolicyBinding": (
                admission.create_validating_admission_policy_binding
            ),
        }
        for doc in chart.default_objects():
            create = creators.get(doc["kind"])
            if create is not None:
                create(copy.deepcopy(doc))
                self.admission_policies.append(doc)
        wait_until("the admission policies in force", lambda: _policy_refuses(api), timeout=30)

    # -- extender -------------------------------------------------------------------------

    def start_extender(self) -> Process:
        token = self.plane.service_account_kubeconfig("mipart-system", "mipart-scheduler")
        self.extender = start_extender_process(
            self.plane,
            "mipart-extender",
            mipart_extender_argv(self.plane, token),
            self.workdir / "extender.log",
            detach=self.detach,
        )
        return self.extender

    # -- controller -----------------------------------------------------------------------

    def start_controller(self, *args: str) -> Process:
        token = self.plane.service_account_kubeconfig("mipart-system", "mipart-controller")
        (port,) = free_ports(1)
        self.controller = Process.start(
            "mipart-controller",
            [
                sys.executable,
                "-m",
                "mipart.controller.main",
                "--kubeconfig",
                str(token),
                "--metrics-address",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
                "--stale-after",
                "30",
                *args,
            ],
            self.workdir / "controller.log",
            detach=self.detach,
        )
        self.controller_metrics = f"http://127.0.0.1:{port}/metrics"
        wait_until(
            "the controller to serve metrics",
            lambda: http_ok(self.controller_metrics),
            timeout=60,
            process=self.controller,
        )
        return self.controller

    # -- teardown -------------------------------------------------------------------------

    def stop(self, api: Any) -> None:
        for process in (self.controller, self.extender, self.webhook):
            if process is not None:
                process.stop()
        admission = kube.admission_registration(api)
        with contextlib.suppress(Exception):
            admission.delete_mutating_webhook_configuration("mipart")
        with contextlib.suppress(Exception):
            admission.delete_validating_webhook_configuration("mipart")
        delete = {
            "ValidatingAdmissionPolicy": admission.delete_validating_admission_policy,
            "ValidatingAdmissionPolicyBinding": (
                admission.delete_validating_admission_policy_binding
            ),
        }
        for doc in self.admission_policies:
            with contextlib.suppress(Exception):
                delete[doc["kind"]](doc["metadata"]["name"])
        if self.admission_policies:
            # The API server drops a deleted policy a moment later; the next test may create
            # the pods these policies refuse (bound ones, as the extender leaves them).
            wait_until("the admission policies gone", lambda: not _policy_refuses(api), 30)
            self.admission_policies.clear()
        objects = kube.custom_objects(api)
        for name, node in self.daemons.items():
            node.stop()
            with contextlib.suppress(Exception):
                objects.delete_cluster_custom_object(*kube.GPUNODES, name)

    def processes(self) -> list[Process]:
        """Every process this stack started that still runs: the components and the daemons."""
        started = [p for p in (self.controller, self.extender, self.webhook) if p is not None]
        for name, node in self.daemons.items():
            if node.process is not None:
                started.append(
                    Process(
                        f"daemon {name}", node.process.pid, node.tmp / "daemon.log", sys.executable
                    )
                )
        return [p for p in started if p.alive()]

    def record(self, path: Path) -> None:
        """Write down the running processes, for stop_recorded() from another process."""
        path.write_text(json.dumps([asdict(p) for p in self.processes()], indent=1, default=str))

    def logs(self) -> Iterator[tuple[str, str]]:
        for process in (self.controller, self.extender, self.webhook):
            if process is not None:
                yield process.name, process.tail(60)
        for name, node in self.daemons.items():
            yield f"daemon {name}", node.log()[-3000:]


def stop_recorded(path: Path) -> list[str]:
    """Stop the processes record() wrote down (each only while its pid still runs the same
    executable); the names of those that were still running."""
    if not path.exists():
        return []
    stopped = []
    for entry in json.loads(path.read_text()):
        process = Process(entry["name"], entry["pid"], Path(entry["log"]), entry["executable"])
        if process.alive():
            process.stop()
            stopped.append(process.name)
    path.unlink()
    return stopped


def _policy_refuses(api: Any) -> bool:
    """A dry-run pod that asks for the partition resource directly is refused by the chart's
    admission policy."""
    pod = {
        "metadata": {"name": "policy-probe"},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {PARTITION_RESOURCE: "1"}}}
            ]
        },
    }
    try:
        kube.core(api).create_namespaced_pod("default", pod, dry_run="All")
    except ApiException as err:
        return err.status == 403 and PARTITION_RESOURCE in str(err.body)
    return False


def _webhook_answers(api: Any) -> bool:
    """A dry-run pod with a bad annotation is refused by our validating webhook."""
    pod = {
        "metadata": {"name": "webhook-probe", "annotations": {MEMORY: "lots"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    try:
        kube.core(api).create_namespaced_pod("default", pod, dry_run="All")
    except Exception as err:
        return MEMORY in str(err)
    return False
