"""One real node beside the kwok nodes: containerd 2 and a kubelet of the control plane's own
version, registering as a Node, running pods in real containers (runc), serving `kubectl logs`
and `kubectl exec`, and taking device plugins (mipart's daemon) on the kubelet's socket.

Everything lives in the node's state directory (configuration, certificates, containerd's and
the kubelet's data, logs, state.json with the pids) except what the kubelet and containerd
hard-code or need short: the device-plugin directory, the kubelet's /var/log/containers links,
the kubepods cgroups and RUN_DIR (sockets, whose paths the kernel limits to 107 bytes). Those
make one real node per machine: a lock file guards them. docs/control-plane.md#a-real-node
says what runs and why each setting is there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from hack.devcluster import credentials, images, kube, kubeconfig, pki, readiness
from hack.devcluster.binaries import Binaries
from hack.devcluster.controlplane import ControlPlane, no_progress
from hack.devcluster.procs import Process, StartupError, free_ports, tail, wait_until

# Sockets and runc's state: short paths (containerd refuses a shim socket directory longer
# than 42 bytes), away from a host containerd's /run/containerd.
RUN_DIR = Path("/run/mipart-realnode")
CONTAINERD_SOCKET = RUN_DIR / "containerd.sock"
LOCK = Path("/run/mipart-realnode.lock")
# The kubelet always serves the device-plugin registration here, whatever --root-dir says
# (k8s.io/kubelet pkg/apis/deviceplugin/v1beta1 DevicePluginPath).
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
# The kubelet links every container log here (pkg/kubelet ContainerLogsDir).
CONTAINER_LOGS_DIR = Path("/var/log/containers")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
# Keeps the schedulers' pods (other tests') off the node; pods name it in spec.nodeName. The
# kubelet itself admits pods against NoExecute taints only.
TAINT = {"key": "mipart.io/real-node", "value": "test", "effect": "NoSchedule"}
STARTUP_TIMEOUT = 120.0
LENIENT_DECODING = "Using lenient decoding as strict decoding failed"
# The pod-resources socket lives under --root-dir; a unix socket path holds 107 bytes.
MAX_SOCKET_PATH = 107


@dataclass
class NodeState:
    """What state.json records: enough for another process to stop the node."""

    name: str
    pids: dict[str, int] = field(default_factory=dict)
    executables: dict[str, str] = field(default_factory=dict)
    # Host directories that did not exist before the node started, removed by stop().
    created: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class RealNode:
    """`RealNode(plane, state_dir).start()` ... `.stop()`. One per machine at a time."""

    def __init__(
        self,
        plane: ControlPlane,
        state_dir: Path,
        name: str | None = None,
        *,
        cdi_dirs: tuple[Path, ...] | None = None,
        node_status_update: str = "2s",
    ) -> None:
        """name: the Node's name, by default the machine's host name, which must resolve to a
        loopback address: the apiserver reaches a kubelet at its Hostname address first, and
        the kubelet listens on 127.0.0.1 only.
        cdi_dirs: where containerd reads CDI specs (default: the state directory's cdi/,
        which `.cdi_dir` names).
        node_status_update: the kubelet's nodeStatusUpdateFrequency, which is how soon a
        device plugin's resources show in the Node's allocatable."""
        self.plane = plane
        self.state_dir = state_dir.resolve()
        self.name = (name or socket.gethostname()).lower()
        self.log_dir = self.state_dir / "logs"
        self.cdi_dir = self.state_dir / "cdi"
        self.cdi_dirs = cdi_dirs if cdi_dirs is not None else (self.cdi_dir,)
        self.node_status_update = node_status_update
        self.kubeconfig = self.state_dir / "kubelet.kubeconfig"
        self.kubelet_root = self.state_dir / "kubelet"
        self.containerd_root = self.state_dir / "containerd"
        self.state = NodeState(name=self.name)
        self._processes: dict[str, Process] = {}
        self.pause_image = ""
        self._lock: IO[str] | None = None
        self._previous_owner: Path | None = None
        self._progress: Callable[[str], None] = no_progress

    # --- what tests use ------------------------------------------------------------------

    @property
    def pod_resources_socket(self) -> Path:
        """The kubelet's pod-resources API (a device plugin's --pod-resources-socket)."""
        return self.kubelet_root / "pod-resources" / "kubelet.sock"

    @property
    def device_plugin_dir(self) -> Path:
        return DEVICE_PLUGIN_DIR

    def logs(self) -> dict[str, Path]:
        return {n: self.log_dir / f"{n}.log" for n in ("containerd", "kubelet")}

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"----- {n} ({p}) -----\n{tail(p, lines)}" for n, p in self.logs().items())

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """containerd's own CLI on this node, in the kubelet's namespace (k8s.io)."""
        return subprocess.run(
            [self._binaries()("ctr"), f"--address={CONTAINERD_SOCKET}", "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def import_image(self, archive: Path) -> None:
        """Make an image archive (OCI layout or docker-archive tar) available to pods, which
        name it with imagePullPolicy: Never (there is no registry)."""
        result = self.ctr("images", "import", str(archive), check=False)
        if result.returncode != 0:
            raise StartupError(f"ctr images import {archive} failed:\n{result.stderr}")

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, *, progress: Callable[[str], None] = no_progress) -> RealNode:
        """Start containerd and the kubelet and wait until the Node is Ready; on failure stop
        what started (keeping the logs) and raise."""
        self._progress = progress
        t0 = time.monotonic()
        self._acquire_lock()
        try:
            self._recover_leftovers()
            # Before anything that stop() would undo: what fails here is not ours to clean.
            self._check_machine()
        except BaseException:
            self._release_lock()
            raise
        try:
            _unmount((self.state_dir,))
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.log_dir.mkdir(parents=True)
            self._start()
        except BaseException:
            self.stop()
            raise
        self.state.timings["start_s"] = round(time.monotonic() - t0, 1)
        self._save()
        return self

    def stop(self) -> None:
        """Stop everything the node started and remove what it left on the machine: the
        kubelet, every container and shim, containerd; then the mounts under the state
        directory, the kubepods cgroups, RUN_DIR, the device-plugin directory and the log
        links. Idempotent, and works on what a crashed run left behind (from state.json)."""
        t0 = time.monotonic()
        if self._lock is None:
            self._acquire_lock()  # refuses while another process's node runs
        try:
            if (self.state_dir / "state.json").exists() and not self.state.pids:
                self.state = _load_state(self.state_dir)  # another process started it
            _teardown(self.state_dir, self.state, self._processes)
            self._delete_node()
            self.state.timings["stop_s"] = round(time.monotonic() - t0, 1)
        finally:
            self._release_lock()

    def _delete_node(self) -> None:
        """The Node object goes with the kubelet, so that no NotReady node stays behind for
        the tests that come after."""
        with contextlib.suppress(Exception):
            kube.core(self.plane.api_client()).delete_node(self.name)

    # --- the start sequence --------------------------------------------------------------

    def _start(self) -> None:
        binaries = self._binaries()
        for d in (RUN_DIR, DEVICE_PLUGIN_DIR, CONTAINER_LOGS_DIR):
            self._make_host_dir(d)
        self._save()
        kubelet_port, healthz_port = free_ports(2)
        self._write_credentials()
        containerd_config = self._write_containerd_config(binaries)
        kubelet_config = self._write_kubelet_config(kubelet_port, healthz_port)

        t = time.monotonic()
        containerd = self._run(
            "containerd", [binaries("containerd"), f"--config={containerd_config}"]
        )
        wait_until(
            "containerd to serve",
            lambda: self.ctr("version", check=False).returncode == 0,
            STARTUP_TIMEOUT,
            process=containerd,
        )
        pause = images.pause_image(binaries, self.state_dir / "images")
        self.import_image(pause.archive)
        self.pause_image = pause.name
        self.state.timings["containerd_s"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        kubelet = self._run(
            "kubelet",
            [
                binaries("kubelet"),
                f"--config={kubelet_config}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                # Its default, /var/lib/kubelet/pki, is not under --root-dir.
                f"--cert-dir={self.kubelet_root / 'pki'}",
                f"--hostname-override={self.name}",
                "--v=2",
            ],
        )
        api = self.plane.api_client()
        wait_until(
            f"node {self.name} Ready",
            lambda: readiness.nodes_ready(api, [self.name]),
            STARTUP_TIMEOUT,
            process=kubelet,
        )
        self.state.timings["kubelet_ready_s"] = round(time.monotonic() - t, 1)
        # An unknown field in the KubeletConfiguration (a misspelt name) is dropped with only
        # this line in the log (pkg/kubelet/kubeletconfig/util/codec): make it an error.
        if LENIENT_DECODING in (self.log_dir / "kubelet.log").read_text(errors="replace"):
            raise StartupError(f"the kubelet ignored fields of {kubelet_config}: see {kubelet.log}")

    def _write_credentials(self) -> None:
        """The node's identity, as the Node authorizer and NodeRestriction expect it."""
        ca = credentials.cluster_ca(self.plane.state_dir / "pki")
        directory = self.state_dir / "pki"
        directory.mkdir()
        pair = pki.issue(
            ca, directory, "kubelet-client", common_name=f"system:node:{self.name}",
            organizations=("system:nodes",),
        )  # fmt: skip
        kubeconfig.write(
            self.kubeconfig,
            server=self.plane.api_url,
            ca_cert=ca.cert,
            user=f"system:node:{self.name}",
            client=pair,
        )
        shutil.copyfile(ca.cert, directory / "ca.crt")

    def _write_containerd_config(self, binaries: Binaries) -> Path:
        cni_conf = self.state_dir / "cni"
        cni_conf.mkdir()
        # Loopback only: hostNetwork pods need nothing more, and the runtime reports its
        # network ready (which the node's Ready condition needs) once one network loads.
        loopback = {
            "cniVersion": "1.0.0",
            "name": "mipart-loopback",
            "plugins": [{"type": "loopback"}],
        }
        (cni_conf / "10-loopback.conflist").write_text(json.dumps(loopback, indent=1))
        runc = shutil.which("runc")
        if runc is None:
            raise StartupError("runc is not on PATH (Debian: apt-get install runc)")
        config = containerd_config(
            root=self.containerd_root / "root",
            state=self.containerd_root / "state",
            shim=Path(binaries("containerd-shim-runc-v2")),
            runc=Path(runc),
            cni_conf_dir=cni_conf,
            cdi_dirs=self.cdi_dirs,
            opt_dir=self.containerd_root / "opt",
        )
        path = self.state_dir / "containerd.toml"
        path.write_text(config)
        for d in self.cdi_dirs:
            d.mkdir(parents=True, exist_ok=True)
        return path

    def _write_kubelet_config(self, port: int, healthz_port: int) -> Path:
        if len(str(self.pod_resources_socket)) > MAX_SOCKET_PATH:
            raise StartupError(
                f"state directory {self.state_dir} is too long: the kubelet's "
                f"{self.pod_resources_socket} would pass the unix socket limit"
            )
        config = kubelet_config(
            port=port,
            healthz_port=healthz_port,
            client_ca=self.state_dir / "pki" / "ca.crt",
            pod_logs=self.state_dir / "pod-logs",
            node_status_update=self.node_status_update,
        )
        path = self.state_dir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _run(self, name: str, argv: list[str]) -> Process:
        self._progress(f"starting {name}")
        proc = Process.start(name, argv, self.log_dir / f"{name}.log", detach=False)
        self._processes[name] = proc
        self.state.pids[name] = proc.pid
        self.state.executables[name] = proc.executable
        self._save()
        return proc

    def _make_host_dir(self, path: Path) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        # The outermost directory created is the one to remove (with what is under it).
        if missing:
            self.state.created.append(str(missing[-1]))

    # --- one node per machine ---------------------------------------------------------------

    def _acquire_lock(self) -> None:
        if os.geteuid() != 0:
            raise StartupError("a real node needs root (mounts, cgroups, runc)")
        handle = LOCK.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise StartupError(
                f"another real node runs on this machine ({owner}; lock {LOCK}): the kubelet "
                f"hard-codes {DEVICE_PLUGIN_DIR}, so only one can run at a time"
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        handle.truncate(0)
        handle.write(f"{self.state_dir} pid {os.getpid()}\n")
        handle.flush()
        self._lock = handle
        self._previous_owner = Path(previous.split(" pid ")[0]) if previous else None

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _recover_leftovers(self) -> None:
        """What a run that died without stop() left: by the state.json of this directory and
        of the directory that held the lock last."""
        candidates = [self._previous_owner, self.state_dir]
        for directory in dict.fromkeys(d for d in candidates if d is not None):
            if (directory / "state.json").exists():
                self._progress(f"cleaning up the real node that {directory} still records")
                _teardown(directory, _load_state(directory), {})

    def _check_machine(self) -> None:
        """Refuse to start over what is not ours: a kubelet that serves the device-plugin
        socket, or kubepods cgroups with processes in them."""
        kubelet_socket = DEVICE_PLUGIN_DIR / "kubelet.sock"
        if kubelet_socket.exists():
            with socket.socket(socket.AF_UNIX) as s, contextlib.suppress(OSError):
                s.connect(str(kubelet_socket))
                raise StartupError(f"a kubelet already serves {kubelet_socket} on this machine")
        for group in _kubepods_cgroups():
            if any(_cgroup_pids(group)):
                raise StartupError(f"{group} has processes: another kubelet runs pods here")
        try:
            address = socket.gethostbyname(self.name)
        except OSError:
            address = "nothing"
        if not address.startswith("127."):
            raise StartupError(
                f"node name {self.name} resolves to {address}, not to a loopback address: the "
                "apiserver reaches the kubelet (logs, exec) by that name, on 127.0.0.1"
            )
        if not (CNI_BIN_DIR / "loopback").exists():
            raise StartupError(
                f"{CNI_BIN_DIR}/loopback is missing (Debian: apt-get install "
                "containernetworking-plugins; hack/build-k8s.sh does it as root)"
            )

    # --- plumbing --------------------------------------------------------------------------

    def _binaries(self) -> Binaries:
        return self.plane.binaries

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "state.json").write_text(json.dumps(asdict(self.state), indent=2))


# --- configuration files ------------------------------------------------------------------------


def containerd_config(
    *,
    root: Path,
    state: Path,
    shim: Path,
    runc: Path,
    cni_conf_dir: Path,
    cdi_dirs: tuple[Path, ...],
    opt_dir: Path,
) -> str:
    """containerd's configuration (version 3, containerd 2.x), every path ours."""

    def toml_list(paths: tuple[Path, ...] | list[Path]) -> str:
        return "[" + ", ".join(json.dumps(str(p)) for p in paths) + "]"

    return f"""version = 3
root = {json.dumps(str(root))}
state = {json.dumps(str(state))}

[grpc]
  address = {json.dumps(str(CONTAINERD_SOCKET))}

[plugins.'io.containerd.grpc.v1.cri']
  # The streaming server of exec/attach/port-forward, which the kubelet proxies.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.runtime']
  # Without CAP_SYS_RESOURCE nothing may lower its oom_score_adj; containerd asks -998 for each
  # pod's pause container, and runc then fails every one ("nsexec: failed to update
  # /proc/self/oom_score_adj"). This caps the request at containerd's own score.
  restrict_oom_score_adj = true
  cdi_spec_dirs = {toml_list(cdi_dirs)}
  # Pod network namespaces under the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [{json.dumps(str(CNI_BIN_DIR))}]
  conf_dir = {json.dumps(str(cni_conf_dir))}

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = {json.dumps(str(shim))}

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = {json.dumps(str(runc))}
  Root = {json.dumps(str(RUN_DIR / "runc"))}
  # No systemd here: the kubelet's cgroupDriver is cgroupfs too.
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # The pause image stays what containerd pins by default; images.pause_image imports it
  # under that name.

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = {json.dumps(str(RUN_DIR / "s"))}

[plugins.'io.containerd.nri.v1.nri']
  # NRI would serve /var/run/nri/nri.sock; nothing here uses it.
  disable = true

[plugins.'io.containerd.internal.v1.opt']
  path = {json.dumps(str(opt_dir))}
"""


def kubelet_config(
    *, port: int, healthz_port: int, client_ca: Path, pod_logs: Path, node_status_update: str
) -> dict[str, Any]:
    """The KubeletConfiguration (kubelet.config.k8s.io/v1beta1)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # The apiserver's kubelet client certificate is checked against the cluster CA, then
        # its requests are authorized by SubjectAccessReviews, as in kubeadm.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        # cgroup v1 machines: the kubelet refuses them unless told otherwise (since 1.35).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "podLogsDir": str(pod_logs),
        "nodeStatusUpdateFrequency": node_status_update,
        "nodeStatusReportFrequency": node_status_update,
        "registerWithTaints": [TAINT],
        "failSwapOn": False,
        # No graceful node shutdown: it needs systemd-logind's inhibitor locks.
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        # The images come from archives and cannot be pulled again: never collect them, and
        # evict nothing for disk that other builds on the machine fill.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "maxPods": 32,
    }


# --- teardown ----------------------------------------------------------------------------------


def _load_state(state_dir: Path) -> NodeState:
    try:
        return NodeState(**json.loads((state_dir / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return NodeState(name="")


def _teardown(state_dir: Path, state: NodeState, processes: dict[str, Process]) -> None:
    def process(name: str) -> Process:
        return processes.get(name) or Process(
            name, state.pids[name], state_dir / "logs" / f"{name}.log", state.executables[name]
        )

    # The kubelet first, so that it restarts nothing; then the containers (every process in
    # the kubepods cgroups), their shims, and containerd.
    if "kubelet" in state.pids:
        process("kubelet").stop()
    for group in _kubepods_cgroups():
        _kill_cgroup(group)
    for pid in _shim_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if "containerd" in state.pids:
        process("containerd").stop()
    _wait_gone(_shim_pids, "containerd's shims")
    _unmount((state_dir, RUN_DIR))
    for group in _kubepods_cgroups():
        _remove_cgroup(group)
    _remove_log_links(state_dir)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    # The kubelet's files in a device-plugin directory that was there before (when it was
    # not, `created` names it and it goes whole).
    for name in ("kubelet.sock", "kubelet_internal_checkpoint"):
        (DEVICE_PLUGIN_DIR / name).unlink(missing_ok=True)
    for created in sorted(state.created, key=len, reverse=True):
        path = Path(created)
        if CONTAINER_LOGS_DIR.is_relative_to(path):
            # Only while empty: logs there that are not ours stay.
            for d in (CONTAINER_LOGS_DIR, *CONTAINER_LOGS_DIR.parents):
                with contextlib.suppress(OSError):
                    d.rmdir()
                if d == path:
                    break
            continue
        shutil.rmtree(path, ignore_errors=True)
    # containerd's and the kubelet's data; the configuration and the logs stay for reading.
    for data in ("containerd", "kubelet"):
        shutil.rmtree(state_dir / data, ignore_errors=True)
    (state_dir / "state.json").unlink(missing_ok=True)


def _kubepods_cgroups() -> list[Path]:
    """The kubelet's pod cgroups (cgroupfs driver) in every hierarchy: v1 controllers and v2."""
    found = [p for p in CGROUP_ROOT.glob("*/kubepods") if p.is_dir()]
    if (CGROUP_ROOT / "kubepods").is_dir():
        found.append(CGROUP_ROOT / "kubepods")
    return found


def _walk_cgroups(group: Path) -> Iterator[Path]:
    """group and the cgroups under it, deepest first."""
    for child in sorted((p for p in group.iterdir() if p.is_dir()), reverse=True):
        yield from _walk_cgroups(child)
    yield group


def _cgroup_pids(group: Path) -> Iterator[int]:
    for cgroup in _walk_cgroups(group):
        with contextlib.suppress(OSError):
            yield from (int(p) for p in (cgroup / "cgroup.procs").read_text().split())


def _kill_cgroup(group: Path) -> None:
    deadline = time.monotonic() + 10
    while (pids := set(_cgroup_pids(group))) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_cgroup(group: Path) -> None:
    for cgroup in _walk_cgroups(group):
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def _shim_pids() -> list[int]:
    """containerd-shim-runc-v2 processes of this node's containerd (they outlive it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"containerd-shim-runc-v2") and str(CONTAINERD_SOCKET).encode() in argv:
            found.append(int(proc.name))
    return found


def _wait_gone(pids: Callable[[], list[int]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pids():
        if time.monotonic() > deadline:
            raise StartupError(f"{what} did not exit: pids {pids()}")
        time.sleep(0.1)


def _unmount(roots: tuple[Path, ...]) -> None:
    """Unmount everything under roots (container root filesystems, the pods' /dev/shm, pod
    volumes), so that removing the directories cannot reach into a mount."""
    for target in _mounts_under(roots):
        subprocess.run(["umount", "--lazy", target], capture_output=True, check=False)
    if left := _mounts_under(roots):
        raise StartupError(f"could not unmount {left}")


def _mounts_under(roots: tuple[Path, ...]) -> list[str]:
    """Mount points under roots, deepest first (from /proc/self/mountinfo, whose fifth field
    is the mount point with spaces and such octal-escaped)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].encode().decode("unicode_escape")
        if any(Path(target).is_relative_to(r) for r in roots):
            found.append(target)
    return sorted(set(found), key=len, reverse=True)


def _remove_log_links(state_dir: Path) -> None:
    if not CONTAINER_LOGS_DIR.is_dir():
        return
    for link in CONTAINER_LOGS_DIR.iterdir():
        if link.is_symlink() and Path(os.readlink(link)).is_relative_to(state_dir):
            link.unlink(missing_ok=True)
