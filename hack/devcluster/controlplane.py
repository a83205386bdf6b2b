"""A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC, admission webhooks,
service-account tokens), kube-controller-manager, the default kube-scheduler, mipart's
kube-scheduler configured by the Helm chart (manifests/charts/mipart), and kwok playing the
kubelets of fake MI300X nodes.

The same code serves pytest (tests/integration/conftest.py) and the shell (hack/cluster).
Everything lives in one state directory: certificates, kubeconfigs, etcd data, component logs,
and state.json, from which another process can find and stop the components.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiException

from hack.devcluster import chart, components, credentials, kube, kubeconfig, kwok, pki, readiness
from hack.devcluster.binaries import Binaries, ensure_built
from hack.devcluster.extender_link import ExtenderLink
from hack.devcluster.procs import Process, StartupError, free_ports, tail, wait_until

# The identity mipart's scheduler runs as, granted by the chart's rbac-scheduler.yaml.
SCHEDULER_SERVICE_ACCOUNT = "mipart-scheduler"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "mipart-scheduler",
    "kwok",
)
STARTUP_TIMEOUT = 120.0


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def no_progress(message: str) -> None:
    del message


@dataclass
class ClusterInfo:
    """What state.json records: enough for another process to use or stop the cluster."""

    api_url: str
    kubeconfig: str
    node_names: list[str]
    bin_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    executables: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    startup_seconds: float = 0.0
    extender_port: int = 0
    extender_status_port: int = 0
    extender_tls: bool = True


class ControlPlane:
    """Start with `ControlPlane(state_dir).start(nodes=N)`; stop with `.stop()`."""

    def __init__(
        self,
        state_dir: Path,
        scheduler_config: Callable[[dict[str, Any]], None] | None = None,
        *,
        extender_tls: bool = True,
    ) -> None:
        """scheduler_config, if given, edits the chart's scheduler configuration before
        mipart's kube-scheduler starts with it (a benchmark lifts its client rate limit).
        extender_tls: the scheduler calls its extender over HTTPS with a client certificate
        (hack/devcluster/extender_link.py); a benchmark's plain reference extender turns it off."""
        self._extender_tls = extender_tls
        self.state_dir = state_dir.resolve()
        self._edit_scheduler_config = scheduler_config
        self.log_dir = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.info: ClusterInfo | None = None
        self._processes: dict[str, Process] = {}
        self._progress: Callable[[str], None] = no_progress

    # --- what tests and people use -------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self._info().api_url

    @property
    def node_names(self) -> list[str]:
        return list(self._info().node_names)

    @property
    def binaries(self) -> Binaries:
        return Binaries(Path(self._info().bin_dir))

    def api_client(self, kubeconfig_path: Path | None = None) -> Any:
        """A `kubernetes.client.ApiClient` for the admin, or for the given kubeconfig."""
        return kube.new_client(kubeconfig_path or self.kubeconfig)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binaries("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def logs(self) -> dict[str, Path]:
        return {name: self.log_dir / f"{name}.log" for name in COMPONENTS}

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"----- {name} ({path}) -----\n{tail(path, lines)}"
            for name, path in self.logs().items()
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, api: Any | None = None, *, node: str | None = None
    ) -> Path:
        """A kubeconfig that acts as a service account (a week-long token), so a component
        runs with exactly the RBAC that manifests/ gives it.

        node: the token is bound to a pod of that account on that node, as the kubelet's
        projected token of a DaemonSet pod is, so the API server names the node in the
        caller's identity (user extra ``authentication.kubernetes.io/node-name``), which the
        chart's policies check the daemon's writes against. The pod is a placeholder kwok
        plays; it lives as long as the token is to work."""
        core = kube.core(api or self.api_client())
        spec: dict[str, Any] = {"expirationSeconds": 7 * 24 * 3600}
        suffix = ""
        if node is not None:
            holder = self._identity_pod(core, namespace, name, node)
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", **holder}
            suffix = f".{node}"
        request = core.create_namespaced_service_account_token(name, namespace, {"spec": spec})
        return kubeconfig.write(
            self.state_dir / f"{namespace}.{name}{suffix}.kubeconfig",
            server=self.api_url,
            ca_cert=self._ca().cert,
            user=name,
            token=request.status.token,
        )

    @staticmethod
    def _identity_pod(core: Any, namespace: str, account: str, node: str) -> dict[str, str]:
        pod_name = f"{account}-identity-{node}"
        body = {
            "metadata": {"name": pod_name, "labels": {"mipart.io/test-identity": account}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": account,
                "automountServiceAccountToken": False,
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
            },
        }
        try:
            pod = core.create_namespaced_pod(namespace, body)
        except ApiException as err:
            if err.status != 409:
                raise
            pod = core.read_namespaced_pod(pod_name, namespace)
        return {"name": pod_name, "uid": str(pod.metadata.uid)}

    def issue_serving_cert(self, name: str) -> pki.KeyPair:
        """A serving certificate for 127.0.0.1 signed by the cluster CA (ca_cert), for a
        webhook or an extender that the apiserver or a scheduler calls over HTTPS."""
        return pki.issue(
            self._ca(), self.state_dir / "pki", name, common_name=name,
            server_names=("localhost",), server_ips=("127.0.0.1",),
        )  # fmt: skip

    @property
    def extender_port(self) -> int:
        """The loopback port mipart's kube-scheduler calls its extender on."""
        return self._info().extender_port

    @property
    def extender(self) -> ExtenderLink:
        """How the scheduler calls its extender, and how a test does (ports, TLS)."""
        info = self._info()
        return ExtenderLink(
            port=info.extender_port,
            status_port=info.extender_status_port,
            tls=info.extender_tls,
            pki_dir=self.state_dir / "pki",
            cluster_ca=self._ca().cert,
        )

    @property
    def ca_cert(self) -> Path:
        return self._ca().cert

    def status(self) -> dict[str, bool]:
        """Whether each component's process is alive."""
        return {name: self._process(name).alive() for name in self._info().pids}

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def load(cls, state_dir: Path) -> ControlPlane | None:
        """The cluster recorded in state_dir, or None when there is none."""
        plane = cls(state_dir)
        state = plane.state_dir / "state.json"
        if not state.exists():
            return None
        plane.info = ClusterInfo(**json.loads(state.read_text()))
        return plane

    def start(
        self,
        *,
        nodes: int = 2,
        detach: bool = False,
        with_mipart: bool = True,
        progress: Callable[[str], None] = no_progress,
    ) -> ControlPlane:
        """Start everything and wait until it works; on failure stop what started and raise.

        detach: the components outlive this process (for `hack/cluster up`).
        with_mipart: install the chart's CRDs and RBAC and run mipart's kube-scheduler; without
        it, a bare cluster for `helm install` to install into.
        progress: told each step, for a person watching.
        """
        self._progress = progress
        stale = ControlPlane.load(self.state_dir)
        if stale is not None:
            progress(f"stopping the cluster that {self.state_dir} still records")
            stale.stop()
        binaries = ensure_built()
        t0 = time.monotonic()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True)
        try:
            self._start(binaries, nodes=nodes, detach=detach, with_mipart=with_mipart)
        except BaseException:
            self.stop(keep_logs=True)
            raise
        info = self._info()
        info.startup_seconds = round(time.monotonic() - t0, 1)
        self._save()
        return self

    def stop(self, *, keep_logs: bool = True) -> None:
        """Stop every component (the API consumers first, etcd last)."""
        for name in reversed(COMPONENTS):
            if self.info is not None and name in self.info.pids:
                self._process(name).stop()
        (self.state_dir / "state.json").unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        if not keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # --- the start sequence --------------------------------------------------------------

    def _start(self, binaries: Binaries, *, nodes: int, detach: bool, with_mipart: bool) -> None:
        ports = components.Ports(*free_ports(len(fields(components.Ports))))
        certs = credentials.Pki.create(self.state_dir / "pki")
        api_url = f"https://127.0.0.1:{ports.apiserver}"
        self.info = ClusterInfo(
            api_url=api_url,
            kubeconfig=str(self.kubeconfig),
            node_names=[kwok.node_name(i) for i in range(nodes)],
            bin_dir=str(binaries.bin_dir),
            started_at=time.time(),
            extender_port=ports.extender,
            extender_status_port=ports.extender_status,
            extender_tls=self._extender_tls,
        )

        def run(name: str, argv: list[str]) -> Process:
            self._progress(f"starting {name}")
            proc = Process.start(name, argv, self.log_dir / f"{name}.log", detach=detach)
            self._processes[name] = proc
            self._info().pids[name] = proc.pid
            self._info().executables[name] = proc.executable
            self._save()  # so that `hack/cluster down` can stop a half-started cluster
            return proc

        def kubeconfig_for(user: str, *groups: str) -> Path:
            path = self.state_dir / f"{user.removeprefix('system:')}.kubeconfig"
            return certs.client_kubeconfig(path, api_url, user, groups)

        etcd = run("etcd", components.etcd(binaries, ports, self.state_dir / "etcd"))
        self._wait(
            "etcd health",
            partial(readiness.http_ok, f"http://127.0.0.1:{ports.etcd_client}/health"),
            etcd,
        )
        apiserver = run("kube-apiserver", components.kube_apiserver(binaries, ports, certs))
        certs.client_kubeconfig(self.kubeconfig, api_url, "kubernetes-admin", ("system:masters",))
        admin_tls = readiness.client_tls(certs.ca.cert, certs.client_pair("kubernetes-admin"))
        self._wait(
            "kube-apiserver /readyz",
            partial(readiness.http_ok, f"{api_url}/readyz", admin_tls),
            apiserver,
        )

        kcm = kubeconfig_for("system:kube-controller-manager")
        run(
            "kube-controller-manager",
            components.kube_controller_manager(binaries, ports, certs, kcm),
        )
        scheduler = kubeconfig_for("system:kube-scheduler")
        run("kube-scheduler", components.kube_scheduler_default(binaries, ports, scheduler))
        # kwok acts for every fake node at once, which no per-node identity can do (the Node
        # authorizer allows a kubelet only its own node), so it runs as a cluster admin.
        kwok_kubeconfig = kubeconfig_for("kwok-controller", "system:masters")
        run("kwok", kwok.kwok_argv(binaries, kwok_kubeconfig, ports.kwok, binaries.kwok_stages))

        api = self.api_client()
        if with_mipart:
            self._progress("installing the chart's CRDs, service accounts, RBAC, PriorityClasses")
            self._install_manifests()
        self._progress(f"creating {nodes} MI300X nodes")
        for name in self.node_names:
            kube.core(api).create_node(body=kwok.mi300x_node(name))
        if with_mipart:
            self._start_mipart_scheduler(api, binaries, ports, run)
        self._wait_until_working(api, ports, with_mipart=with_mipart)

    def _install_manifests(self) -> None:
        """The chart's CRDs, service accounts, RBAC and PriorityClasses, applied by kubectl as
        a user would."""
        self.kubectl("create", "namespace", chart.NAMESPACE)
        self.kubectl("apply", "-f", str(chart.CRDS))
        access = chart.write(
            chart.access_objects(chart.default_objects()), self.state_dir / "chart-access.yaml"
        )
        self.kubectl("apply", "-f", str(access))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def _start_mipart_scheduler(
        self,
        api: Any,
        binaries: Binaries,
        ports: components.Ports,
        run: Callable[[str, list[str]], Process],
    ) -> None:
        """Run kube-scheduler with the chart's scheduler configuration as mipart's service
        account, so the chart's RBAC is what lets it work."""
        config = self._scheduler_config()
        namespace = config["leaderElection"]["resourceNamespace"]
        sa_kubeconfig = self.service_account_kubeconfig(namespace, SCHEDULER_SERVICE_ACCOUNT, api)
        # The chart's configuration with this cluster's kubeconfig and extender port.
        config["clientConnection"]["kubeconfig"] = str(sa_kubeconfig)
        link = self.extender
        link.create_certificates(self._ca())
        for extender in config.get("extenders", []):
            link.configure_scheduler(extender)
        config_copy = self.state_dir / "scheduler-config.yaml"
        config_copy.write_text(yaml.safe_dump(config, sort_keys=False))
        run(
            "mipart-scheduler",
            components.kube_scheduler_from_config(binaries, ports, config_copy, sa_kubeconfig),
        )

    def _wait_until_working(self, api: Any, ports: components.Ports, *, with_mipart: bool) -> None:
        self._progress("waiting for schedulers, controllers and nodes")
        for name, port in (
            ("kube-scheduler", ports.scheduler),
            ("mipart-scheduler", ports.mipart_scheduler),
            ("kube-controller-manager", ports.controller_manager),
        ):
            if name not in self._processes:
                continue
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait(
                f"{name} /healthz",
                partial(readiness.http_ok, url, readiness.unverified_tls()),
                self._processes[name],
            )
        self._wait(
            f"{len(self.node_names)} kwok nodes Ready",
            partial(readiness.nodes_ready, api, self.node_names),
            self._processes["kwok"],
        )
        # The controller manager's service-account controller creates `default` in each
        # namespace; until then no pod can be created.
        self._wait(
            "the default service account",
            partial(readiness.service_account_exists, api, "default", "default"),
            self._processes["kube-controller-manager"],
        )
        if not with_mipart:
            return
        lease = self._scheduler_config()["leaderElection"]
        self._wait(
            "mipart-scheduler to hold its leader lease",
            partial(readiness.lease_held, api, lease["resourceNamespace"], lease["resourceName"]),
            self._processes["mipart-scheduler"],
        )

    def _scheduler_config(self) -> dict[str, Any]:
        config = chart.scheduler_config()
        if self._edit_scheduler_config is not None:
            self._edit_scheduler_config(config)
        return config

    def _wait(self, what: str, ready: Callable[[], bool], process: Process) -> None:
        wait_until(what, ready, STARTUP_TIMEOUT, process=process)

    # --- plumbing --------------------------------------------------------------------------

    def _info(self) -> ClusterInfo:
        if self.info is None:
            raise StartupError(f"no cluster in {self.state_dir}")
        return self.info

    def _ca(self) -> pki.KeyPair:
        return credentials.cluster_ca(self.state_dir / "pki")

    def _process(self, name: str) -> Process:
        if name not in self._processes:
            info = self._info()
            self._processes[name] = Process(
                name, info.pids[name], self.log_dir / f"{name}.log", info.executables[name]
            )
        return self._processes[name]

    def _save(self) -> None:
        (self.state_dir / "state.json").write_text(json.dumps(asdict(self._info()), indent=2))
