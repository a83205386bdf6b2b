"""The kubelet's side of the device plugin protocol, over real unix sockets.

It does what the kubelet's device manager does, in the same order (docs/facts-kubernetes.md,
#device-plugin-api and #pod-resources-api): serve ``Registration`` on ``kubelet.sock``; inside
Register dial the plugin back and ask its options; keep the ListAndWatch device list; admit a
pod by choosing, per container, unallocated healthy devices (in any order: here at random),
calling Allocate, then recording the choice, which the pod-resources API (``List``/``Get``)
serves; call PreStartContainer when the plugin asked for it; then "create the container" as a
CDI-enabled runtime does, by resolving the CDI names Allocate returned from the spec files.
A restart deletes every socket in the directory and serves a new ``kubelet.sock``.
"""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mipart.kubelet.deviceplugin.v1beta1 import api_pb2 as dp
from mipart.kubelet.deviceplugin.v1beta1 import api_pb2_grpc as dp_grpc
from mipart.kubelet.podresources.v1 import api_pb2 as pr
from mipart.kubelet.podresources.v1 import api_pb2_grpc as pr_grpc

HEALTHY = "Healthy"


class AdmissionError(Exception):
    """The pod could not be admitted or a container could not be created."""


@dataclass
class Container:
    name: str
    devices: list[str]
    cdi_names: list[str] = field(default_factory=list)
    # The container edits the runtime would apply, merged over its CDI devices.
    device_nodes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # container path -> host path


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    containers: dict[str, Container] = field(default_factory=dict)


class KubeletPeer:
    def __init__(
        self, plugin_dir: Path, pod_resources_socket: Path, cdi_dir: Path, resource: str
    ) -> None:
        self.plugin_dir = plugin_dir
        self.pod_resources_socket = pod_resources_socket
        self.cdi_dir = cdi_dir
        self.resource = resource
        self._lock = threading.Lock()
        self._devices: dict[str, str] = {}  # ID -> health, as the last ListAndWatch said
        self._pods: dict[tuple[str, str], Pod] = {}
        self._allocated: set[str] = set()
        self._options: dp.DevicePluginOptions | None = None
        self._plugin: grpc.Channel | None = None
        self.endpoints: list[str] = []  # every endpoint registered, in order
        self.registered = threading.Event()
        self.devices_seen = threading.Condition(self._lock)
        self._registration: grpc.Server | None = None
        self._pod_resources: grpc.Server | None = None

    @property
    def kubelet_socket(self) -> Path:
        return self.plugin_dir / "kubelet.sock"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.pod_resources_socket.parent.mkdir(parents=True, exist_ok=True)
        self._serve_registration()
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        pr_grpc.add_PodResourcesListerServicer_to_server(_PodResources(self), server)
        self.pod_resources_socket.unlink(missing_ok=True)
        server.add_insecure_port(f"unix://{self.pod_resources_socket}")
        server.start()
        self._pod_resources = server

    def restart(self) -> None:
        """What a kubelet restart does to the directory: every socket goes (the plugin's too),
        then a new kubelet.sock. Allocations survive (the kubelet checkpoints them)."""
        self._stop_registration()
        for path in self.plugin_dir.iterdir():
            if path.is_socket():
                path.unlink()
        self.registered.clear()
        self._serve_registration()

    def stop(self) -> None:
        self._stop_registration()
        if self._pod_resources is not None:
            self._pod_resources.stop(grace=None)
        self.kubelet_socket.unlink(missing_ok=True)

    def _serve_registration(self) -> None:
        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        dp_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.kubelet_socket}")
        server.start()
        self._registration = server

    def _stop_registration(self) -> None:
        if self._registration is not None:
            self._registration.stop(grace=None)
            self._registration = None
        if self._plugin is not None:
            self._plugin.close()
            self._plugin = None

    # -- the plugin --------------------------------------------------------------------------

    def connect(self, endpoint: str) -> None:
        """Register's work: dial the plugin, ask its options, start reading its devices."""
        channel = grpc.insecure_channel(f"unix://{self.plugin_dir / endpoint}")
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = dp_grpc.DevicePluginStub(channel)
        self._options = stub.GetDevicePluginOptions(dp.Empty(), timeout=10)
        if self._plugin is not None:
            self._plugin.close()
        self._plugin = channel
        stream = stub.ListAndWatch(dp.Empty())
        threading.Thread(target=self._watch, args=(stream,), daemon=True).start()
        self.endpoints.append(endpoint)
        self.registered.set()

    def _watch(self, stream: Any) -> None:
        try:
            for response in stream:
                with self._lock:
                    self._devices = {d.ID: d.health for d in response.devices}
                    self.devices_seen.notify_all()
        except grpc.RpcError:
            # Stream gone (plugin or peer stopping): the kubelet marks the devices unhealthy.
            with self._lock:
                self._devices = dict.fromkeys(self._devices, "Unhealthy")
                self.devices_seen.notify_all()

    def healthy_devices(self) -> list[str]:
        with self._lock:
            return [d for d, h in self._devices.items() if h == HEALTHY]

    def wait_devices(self, count: int, timeout: float = 10) -> list[str]:
        with self.devices_seen:
            self.devices_seen.wait_for(
                lambda: sum(h == HEALTHY for h in self._devices.values()) >= count, timeout
            )
        return self.healthy_devices()

    @property
    def options(self) -> dp.DevicePluginOptions | None:
        return self._options

    def _stub(self) -> dp_grpc.DevicePluginStub:
        if self._plugin is None:
            raise AdmissionError("no device plugin registered")
        return dp_grpc.DevicePluginStub(self._plugin)

    # -- pods --------------------------------------------------------------------------------

    def admit(self, namespace: str, name: str, uid: str, containers: dict[str, int]) -> Pod:
        """Admit a pod (container name -> devices wanted), then create its containers."""
        pod = Pod(namespace, name, uid)
        for container, count in containers.items():
            chosen = self._choose(count)
            try:
                response = self._stub().Allocate(
                    dp.AllocateRequest(
                        container_requests=[dp.ContainerAllocateRequest(devices_ids=chosen)]
                    ),
                    timeout=30,
                )
            except grpc.RpcError as err:
                self._free(chosen)
                raise AdmissionError(f"Allocate {chosen}: {err.details()}") from None
            (answer,) = response.container_responses
            record = Container(container, chosen, [c.name for c in answer.cdi_devices])
            with self._lock:
                pod.containers[container] = record
                self._pods[(namespace, name)] = pod
        for record in pod.containers.values():
            self.create_container(record)
        return pod

    def create_container(self, container: Container) -> None:
        if self._options is not None and self._options.pre_start_required:
            self.pre_start(container.devices)
        for cdi_name in container.cdi_names:
            edits = resolve_cdi(self.cdi_dir, cdi_name)
            for node in edits.get("deviceNodes", []):
                if node["path"] not in container.device_nodes:
                    container.device_nodes.append(node["path"])
            for entry in edits.get("env", []):
                key, _, value = entry.partition("=")
                container.env[key] = value
            for mount in edits.get("mounts", []):
                container.mounts[mount["containerPath"]] = mount["hostPath"]

    def pre_start(self, devices: list[str]) -> None:
        try:
            self._stub().PreStartContainer(
                dp.PreStartContainerRequest(devices_ids=devices), timeout=30
            )
        except grpc.RpcError as err:
            raise AdmissionError(
                f"PreStartContainer {devices}: {err.code().name}: {err.details()}"
            ) from None

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            pod = self._pods.pop((namespace, name), None)
        if pod is not None:
            for container in pod.containers.values():
                self._free(container.devices)

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    def _choose(self, count: int) -> list[str]:
        with self._lock:
            free = [
                d for d, h in self._devices.items() if h == HEALTHY and d not in self._allocated
            ]
            if len(free) < count:
                raise AdmissionError(f"{count} {self.resource} wanted, {len(free)} free")
            chosen = random.sample(free, count)
            self._allocated.update(chosen)
            return chosen

    def _free(self, devices: list[str]) -> None:
        with self._lock:
            self._allocated.difference_update(devices)


def resolve_cdi(cdi_dir: Path, qualified: str) -> dict[str, Any]:
    """The container edits of CDI device ``vendor/class=name``, as a runtime finds them: in
    exactly one spec file of the directory, or the container is not created."""
    kind, sep, device = qualified.partition("=")
    if not sep:
        raise AdmissionError(f"{qualified!r} is not a fully qualified CDI name")
    found = []
    for path in sorted(cdi_dir.glob("*.json")) if cdi_dir.is_dir() else []:
        spec = json.loads(path.read_text())
        if spec.get("kind") != kind:
            continue
        edits = {**spec.get("containerEdits", {})}
        for entry in spec.get("devices", []):
            if entry.get("name") == device:
                merged = {
                    key: edits.get(key, []) + entry["containerEdits"].get(key, [])
                    for key in ("deviceNodes", "env", "mounts")
                }
                found.append(merged)
    if len(found) != 1:
        raise AdmissionError(f"CDI device {qualified}: {len(found)} specs define it")
    return found[0]


class _Registration(dp_grpc.RegistrationServicer):
    def __init__(self, peer: KubeletPeer) -> None:
        self._peer = peer

    def Register(self, request: dp.RegisterRequest, context: Any) -> dp.Empty:
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"version {request.version}")
        if request.resource_name != self._peer.resource:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"resource {request.resource_name}")
        try:
            self._peer.connect(request.endpoint)
        except (grpc.RpcError, grpc.FutureTimeoutError) as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot reach the plugin: {err}")
        return dp.Empty()


class _PodResources(pr_grpc.PodResourcesListerServicer):
    def __init__(self, peer: KubeletPeer) -> None:
        self._peer = peer

    def List(self, request: Any, context: Any) -> pr.ListPodResourcesResponse:
        return pr.ListPodResourcesResponse(
            pod_resources=[self._resources(p) for p in self._peer.pods()]
        )

    def Get(self, request: pr.GetPodResourcesRequest, context: Any) -> pr.GetPodResourcesResponse:
        for pod in self._peer.pods():
            if (pod.namespace, pod.name) == (request.pod_namespace, request.pod_name):
                return pr.GetPodResourcesResponse(pod_resources=self._resources(pod))
        context.abort(grpc.StatusCode.NOT_FOUND, f"pod {request.pod_namespace}/{request.pod_name}")
        raise AssertionError("unreachable")

    def GetAllocatableResources(
        self, request: Any, context: Any
    ) -> pr.AllocatableResourcesResponse:
        devices = self._peer.healthy_devices()
        return pr.AllocatableResourcesResponse(
            devices=[pr.ContainerDevices(resource_name=self._peer.resource, device_ids=devices)]
        )

    def _resources(self, pod: Pod) -> pr.PodResources:
        return pr.PodResources(
            name=pod.name,
            namespace=pod.namespace,
            containers=[
                pr.ContainerResources(
                    name=c.name,
                    devices=[
                        pr.ContainerDevices(resource_name=self._peer.resource, device_ids=c.devices)
                    ],
                )
                for c in pod.containers.values()
            ],
        )
