"""Serving the plugin socket and registering it with the kubelet, again after each kubelet
restart.

A restarting kubelet deletes every socket in the device-plugin directory and recreates its
own ``kubelet.sock``; a new inode there (or our socket gone) means: serve again, register
again. Polling the inode once a second needs no inotify dependency and costs nothing.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import structlog

from mipart.agent.deviceplugin.servicer import DevicePluginService, options
from mipart.kubelet.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

log = structlog.get_logger(__name__)

API_VERSION = "v1beta1"
DEFAULT_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"
ENDPOINT = "mipart.sock"
# One worker per open ListAndWatch stream (one per kubelet connection, old ones draining)
# plus concurrent Allocate/PreStartContainer calls.
WORKERS = 16


class PluginEndpoint:
    """Our gRPC server on ``<dir>/mipart.sock`` and the registration that announces it."""

    def __init__(self, service: DevicePluginService, plugin_dir: Path, resource: str) -> None:
        self._service = service
        self._dir = plugin_dir
        self._resource = resource
        self._server: grpc.Server | None = None
        self._registered_inode: int | None = None

    @property
    def socket(self) -> Path:
        return self._dir / ENDPOINT

    @property
    def kubelet_socket(self) -> Path:
        return self._dir / KUBELET_SOCKET

    def check(self) -> None:
        """Serve and register if the kubelet is new (or we never registered); else nothing."""
        inode = _inode(self.kubelet_socket)
        if inode is None:
            return  # no kubelet yet: it will create its socket when it starts
        if inode == self._registered_inode and self.socket.exists():
            return
        self._serve()
        try:
            self._register()
        except grpc.RpcError as err:
            # Left unregistered: the next check tries again.
            log.warning("deviceplugin.register_failed", error=f"{err.code().name} {err.details()}")
            return
        self._registered_inode = inode
        log.info("deviceplugin.registered", resource=self._resource, endpoint=str(self.socket))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1).wait()
            self._server = None
        self.socket.unlink(missing_ok=True)

    def _serve(self) -> None:
        # The kubelet must be able to reach us before we register (it dials back inside
        # Register), so a fresh server listens first; a stale socket file would make bind fail.
        self.stop()
        self._dir.mkdir(parents=True, exist_ok=True)
        server = grpc.server(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="dp"))
        api_pb2_grpc.add_DevicePluginServicer_to_server(self._service, server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server

    def _register(self) -> None:
        with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
            api_pb2_grpc.RegistrationStub(channel).Register(
                api_pb2.RegisterRequest(
                    version=API_VERSION,
                    endpoint=ENDPOINT,
                    resource_name=self._resource,
                    options=options(),
                ),
                timeout=10,
            )


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
