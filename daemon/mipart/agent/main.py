"""``mipart-daemon``: the node agent. Owns this node's MI300X partitions through amdsmi and
serves them over gRPC (NodeService)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import start_http_server

from mipart.agent.partitions.manager import PartitionManager
from mipart.runtime import logs
from mipart.runtime.signals import wait_for_stop

if TYPE_CHECKING:
    from mipart.agent.deviceplugin.plugin import DevicePlugin
    from mipart.agent.gpunode.layouts import LayoutRule
    from mipart.agent.gpunode.publisher import GpuNodePublisher
    from mipart.agent.hardware.amdsmi_backend import AmdSmiHardware
    from mipart.agent.limits.monitor import MemoryMonitor
    from mipart.agent.server.convert import PodsProvider
    from mipart.geometry import NodeInventory
from mipart.agent.metrics import DaemonMetrics
from mipart.agent.partitions.store import StateFileError, StateStore
from mipart.agent.server.startup_sockets import StartupSockets
from mipart.agent.server.transport import ConfigError, TlsFiles, serve
from mipart.sizing import LimitAction, read_pod_memory

DEFAULT_SOCKET = "/run/mipart/node.sock"
Layouts = tuple["LayoutRule", ...]
DEFAULT_LAUNCHER_DIR = Path("/run/mipart/launcher")
log = structlog.get_logger("mipart.agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-daemon",
        description=(
            "Manage this node's MI300X compute (SPX/DPX/QPX/CPX) and memory (NPS1/NPS2/NPS4) "
            "partitions through amdsmi, and serve them over gRPC. amdsmi loads "
            "$ROCM_PATH/lib/libamd_smi.so: a ROCm install, or hack/amdsmi-emulator/build."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help=f"unix socket (default {DEFAULT_SOCKET})")
    where.add_argument(
        "--listen", metavar="ADDR", help="unix:///path or tcp://host:port (TCP requires mTLS)"
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM) for tcp://")
    p.add_argument("--tls-key", type=Path, help="server key (PEM) for tcp://")
    p.add_argument("--tls-client-ca", type=Path, help="CA that signs client certificates")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("MIPART_STATE_DIR", "/var/lib/mipart")),
        help="where the desired layout and in-flight changes are persisted",
    )
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME", socket.gethostname()))
    p.add_argument(
        "--metrics-address",
        default="127.0.0.1:9400",
        help="host:port for Prometheus metrics, or 'off'",
    )
    p.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between hardware reads"
    )
    p.add_argument(
        "--reload-estimate",
        type=float,
        default=140.0,
        help="expected seconds of a driver reload, for progress reports (140 s on MI300X)",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        help="publish GPUNode status with this kubeconfig (in a cluster: the pod's service "
        "account is used without this flag)",
    )
    p.add_argument(
        "--layouts",
        type=Path,
        metavar="FILE",
        help="YAML list of {matchLabels, memoryPartition, computePartition}: the first entry "
        "whose labels the Node has is the layout its GPUNode is created with (the chart's "
        "daemon.layouts); afterwards GPUNode.spec alone says what the GPUs run",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=20.0,
        help="seconds between GPUNode status writes when nothing changes",
    )
    p.add_argument(
        "--device-plugin-dir",
        type=Path,
        help="serve the kubelet device plugin for mipart.io/partition in this directory "
        "(in a cluster: /var/lib/kubelet/device-plugins without this flag)",
    )
    p.add_argument(
        "--pod-resources-socket",
        type=Path,
        default=Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        help="the kubelet's pod-resources API, which says which pod holds which slot",
    )
    p.add_argument(
        "--cdi-dir",
        type=Path,
        default=Path("/var/run/cdi"),
        help="where the device plugin writes the CDI spec of each slot",
    )
    p.add_argument(
        "--launcher-dir",
        type=Path,
        help="serve the start-up lock of mipart-vllm launchers here: one socket per pod that "
        "holds partitions, each mounted into that pod's container alone (in a cluster: "
        f"{DEFAULT_LAUNCHER_DIR} without this flag)",
    )
    p.add_argument(
        "--memory-limit-action",
        choices=[a.value for a in LimitAction],
        default=LimitAction.REPORT.value,
        help="what to do about a pod over its memory limit, beyond an Event and the metrics",
    )
    p.add_argument(
        "--memory-limit-interval",
        type=float,
        default=2.0,
        help="seconds between memory-limit checks (also made on every hardware read)",
    )
    p.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="the host's /proc, where a GPU process's cgroup names its pod",
    )
    logs.add_arguments(p)
    return p


def _partition_manager(args: argparse.Namespace) -> tuple[PartitionManager, AmdSmiHardware] | str:
    """The manager over the GPUs amdsmi finds, from the persisted state, and that hardware; or
    why the daemon cannot start (no amdsmi library or GPU, a state file it cannot use)."""
    from mipart.agent.hardware.amdsmi_backend import AmdSmiHardware  # noqa: PLC0415

    try:
        hardware = AmdSmiHardware()
    except RuntimeError as err:
        return str(err)
    try:
        manager = PartitionManager(
            hardware,
            StateStore(args.state_dir / "state.json"),
            reload_estimate_s=args.reload_estimate,
            poll_interval_s=args.poll_interval,
        )
    except StateFileError as err:
        hardware.close()
        return str(err)
    return manager, hardware


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Bad flags are refused before logging is set up: configuring it has effects beyond this
    # call (the stream it writes to), which a refused start must not leave behind.
    configuration = _configuration(args)
    if isinstance(configuration, str):
        print(f"mipart-daemon: {configuration}", file=sys.stderr)
        return 2
    logs.configure_from(args)
    tls, layouts = configuration
    listen = args.listen or args.socket or DEFAULT_SOCKET

    started = _partition_manager(args)
    if isinstance(started, str):
        print(f"mipart-daemon: {started}", file=sys.stderr)
        return 1
    manager, hardware = started
    metrics = DaemonMetrics()
    manager.add_listener(metrics.observe_status)
    manager.add_operation_listener(lambda op, last, s: metrics.observe_operation(op.kind, last, s))
    manager.add_operation_listener(
        lambda op, last, s: log.info(
            "operation.done",
            operation=op.id,
            phase=last.phase.value,
            seconds=round(s, 2),
            message=last.message,
        )
    )
    from mipart.agent.server.service import NodeService  # noqa: PLC0415

    service = NodeService(manager, args.node_name)
    try:
        server, health = serve(service, listen, tls)
    except ConfigError as err:
        print(f"mipart-daemon: {err}", file=sys.stderr)
        return 2
    launcher_dir = args.launcher_dir
    if launcher_dir is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        launcher_dir = DEFAULT_LAUNCHER_DIR
    launchers = None if launcher_dir is None else StartupSockets(launcher_dir)
    if args.metrics_address != "off":
        host, _, port = args.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=metrics.registry)
    # The publisher (and its pod cache) exists before the manager starts, so that even the
    # start-up reconcile refuses to change a GPU that a pod holds an allocation on.
    publisher = _publisher(args, manager, layouts)
    if publisher is not None:
        service.set_pods_provider(_pods_provider(publisher, args.proc_root))
        publisher.start()
    manager.start()
    plugin = _device_plugin(args, manager, publisher, launchers)
    monitor = None if publisher is None else _memory_monitor(args, manager, publisher, metrics)
    inventory = manager.status().inventory
    log.info(
        "daemon.serving",
        listen=listen,
        node=args.node_name,
        gpus=0 if inventory is None else len(inventory.gpus),
    )

    wait_for_stop()
    log.info("daemon.stopping")
    health.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    if launchers is not None:
        launchers.close()
    # The device plugin and the monitor read the publisher's pod cache: stop them first.
    for part in (plugin, monitor, publisher):
        if part is not None:
            part.stop()
    manager.stop()
    hardware.close()
    return 0


def _configuration(args: argparse.Namespace) -> tuple[TlsFiles | None, Layouts] | str:
    """The TLS files and the first-layout rules the flags name, or what is wrong with them."""
    tls_parts = (args.tls_cert, args.tls_key, args.tls_client_ca)
    if any(tls_parts) and not all(tls_parts):
        return "--tls-cert, --tls-key and --tls-client-ca go together"
    tls = TlsFiles(*tls_parts) if all(tls_parts) else None
    if args.layouts is None:
        return tls, ()
    from mipart.agent.gpunode.layouts import LayoutsError, load_layouts  # noqa: PLC0415

    try:
        return tls, load_layouts(args.layouts)
    except LayoutsError as err:
        return f"--layouts: {err}"


def _publisher(
    args: argparse.Namespace, manager: PartitionManager, layouts: Layouts
) -> GpuNodePublisher | None:
    """Publish to Kubernetes when given a kubeconfig or running in a pod; else run standalone."""
    if args.kubeconfig is None and "KUBERNETES_SERVICE_HOST" not in os.environ:
        log.info("gpunode.disabled", reason="no --kubeconfig and not in a cluster")
        return None
    from mipart.agent.gpunode.events import GpuNodeEvents  # noqa: PLC0415
    from mipart.agent.gpunode.publisher import GpuNodePublisher  # noqa: PLC0415
    from mipart.agent.gpunode.spec import SpecWatcher  # noqa: PLC0415
    from mipart.agent.partitions.desired import DesiredLayoutReconciler  # noqa: PLC0415
    from mipart.kube.api import KubeApi  # noqa: PLC0415

    api = KubeApi.connect(args.kubeconfig)
    reconciler = DesiredLayoutReconciler(manager)
    publisher = GpuNodePublisher(
        api,
        args.node_name,
        manager,
        heartbeat_s=args.heartbeat,
        reconciler=reconciler,
        layouts=layouts,
    )
    manager.set_occupant_check(publisher.occupants)
    watcher = SpecWatcher(api, args.node_name, reconciler)
    reconciler.add_notifier(GpuNodeEvents(api, args.node_name, watcher.uid).record)
    watcher.start()
    reconciler.start()
    return publisher


def _pods_provider(publisher: GpuNodePublisher, proc_root: Path) -> PodsProvider:
    """Which pods hold each partition, for mipart-smi: the publisher's pod cache for the
    allocations, each GPU process's cgroup for its pod (as the memory-limit monitor reads)."""
    from mipart.agent.limits.cgroups import ProcPods  # noqa: PLC0415
    from mipart.agent.server.convert import PodsOnNode  # noqa: PLC0415

    proc = ProcPods(proc_root)

    def pods(inventory: NodeInventory) -> PodsOnNode:
        if not publisher.pods.synced.is_set():
            return PodsOnNode()  # not listed yet: shown as no pods rather than waited for
        allocations = tuple(publisher.allocations())
        processes = inventory.processes
        pod_of_pid, _ = proc.pods_of(p.pid for p in processes)
        reading = read_pod_memory(processes, pod_of_pid, allocations)
        return PodsOnNode(
            allocations, {(m.pod_uid, m.partition_id): m.used_bytes for m in reading.pods}
        )

    return pods


def _memory_monitor(
    args: argparse.Namespace,
    manager: PartitionManager,
    publisher: GpuNodePublisher,
    metrics: DaemonMetrics,
) -> MemoryMonitor:
    """Watch pods' VRAM against their allocations (the publisher's pods, so no extra watch)."""
    from mipart.agent.limits.cgroups import ProcPods  # noqa: PLC0415
    from mipart.agent.limits.monitor import MemoryMonitor  # noqa: PLC0415
    from mipart.kube.api import KubeApi  # noqa: PLC0415

    monitor = MemoryMonitor(
        KubeApi.connect(args.kubeconfig),
        args.node_name,
        manager,
        publisher,
        ProcPods(args.proc_root),
        action=LimitAction(args.memory_limit_action),
        interval_s=args.memory_limit_interval,
    )
    monitor.add_listener(metrics.observe_pod_memory)
    monitor.start()
    log.info("memory_monitor.started", action=args.memory_limit_action)
    return monitor


def _device_plugin(
    args: argparse.Namespace,
    manager: PartitionManager,
    publisher: GpuNodePublisher | None,
    launchers: StartupSockets | None,
) -> DevicePlugin | None:
    """Serve the kubelet device plugin when given its directory or running in a cluster.

    It reads pods' allocations from the API server, so it needs Kubernetes access; the
    publisher's cache of this node's pods spares it a request per container start.
    """
    plugin_dir = args.device_plugin_dir
    if plugin_dir is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        plugin_dir = Path("/var/lib/kubelet/device-plugins")
    if plugin_dir is None:
        log.info("deviceplugin.disabled", reason="no --device-plugin-dir and not in a cluster")
        return None
    if args.kubeconfig is None and "KUBERNETES_SERVICE_HOST" not in os.environ:
        log.warning("deviceplugin.disabled", reason="needs --kubeconfig to read allocations")
        return None
    from mipart.agent.deviceplugin.allocations import Allocations  # noqa: PLC0415
    from mipart.agent.deviceplugin.plugin import DevicePlugin  # noqa: PLC0415
    from mipart.kube.api import KubeApi  # noqa: PLC0415

    allocations = Allocations(
        KubeApi.connect(args.kubeconfig), None if publisher is None else publisher.pods
    )
    plugin = DevicePlugin(
        manager,
        allocations,
        plugin_dir=plugin_dir,
        pod_resources_socket=args.pod_resources_socket,
        cdi_dir=args.cdi_dir,
        launchers=launchers,
    )
    plugin.start()
    log.info("deviceplugin.started", dir=str(plugin_dir), cdi_dir=str(args.cdi_dir))
    return plugin


if __name__ == "__main__":
    sys.exit(main())
