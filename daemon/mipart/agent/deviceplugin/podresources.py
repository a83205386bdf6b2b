"""Which pod and container hold a slot: the kubelet's own record, from its pod-resources API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from mipart.kubelet.podresources.v1 import api_pb2, api_pb2_grpc

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
# The upstream Go clients' limit; Python's default (4 MiB) is too small for a busy node.
MAX_MESSAGE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Holder:
    namespace: str
    pod: str
    container: str
    slots: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"


class PodResources:
    def __init__(self, socket: Path, resource: str, *, timeout_s: float = 5.0) -> None:
        self._socket = socket
        self._resource = resource
        self._timeout_s = timeout_s

    def holders(self) -> list[Holder]:
        """Every container holding slots of our resource, as the kubelet lists them now."""
        # A channel per call: the kubelet recreates its socket on restart, and a channel to
        # the old inode would fail until it reconnects.
        with grpc.insecure_channel(
            f"unix://{self._socket}", options=[("grpc.max_receive_message_length", MAX_MESSAGE)]
        ) as channel:
            stub = api_pb2_grpc.PodResourcesListerStub(channel)
            response = stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s)
        found = []
        for pod in response.pod_resources:
            for container in pod.containers:
                slots = tuple(
                    device_id
                    for devices in container.devices
                    if devices.resource_name == self._resource
                    for device_id in devices.device_ids
                )
                if slots:
                    found.append(Holder(pod.namespace, pod.name, container.name, slots))
        return found

    def holder_of(self, slots: list[str]) -> Holder | None:
        """The one container that holds all of ``slots``, or None if the kubelet shows none."""
        wanted = set(slots)
        for holder in self.holders():
            if wanted <= set(holder.slots):
                return holder
        return None
