"""Where NodeService listens: a unix socket with tight permissions by default; TCP only with
mutual TLS (a client certificate signed by the given CA is required)."""

from __future__ import annotations

import os
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mipart.agent.server.service import NodeService
from mipart.agent.server.startup_service import StartupService
from mipart.api.v1 import node_pb2, node_pb2_grpc

SERVICE_NAME = node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
SOCKET_MODE = 0o660
SOCKET_DIR_MODE = 0o750
# A pod's launcher socket is reached only through the mount the device plugin gives that
# pod's container, whose processes may run as any user: open to all who can reach it, and all
# it serves is that pod's start-up lock.
LAUNCHER_SOCKET_MODE = 0o666
LAUNCHER_SOCKET_DIR_MODE = 0o755
# One call holds the lock, and a second is refused at once (one call at a time per pod);
# gRPC itself refuses calls past these (RESOURCE_EXHAUSTED), so a flood costs no thread.
_LAUNCHER_WORKERS = 2
_LAUNCHER_MAX_CALLS = 4


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


class ConfigError(ValueError):
    pass


def parse_listen(listen: str, tls: TlsFiles | None) -> str:
    """``unix:///run/mipart/node.sock`` or a bare path, or ``tcp://host:port`` (needs mTLS)."""
    if listen.startswith("tcp://"):
        if tls is None:
            raise ConfigError(
                f"--listen {listen}: TCP needs mutual TLS; give --tls-cert, --tls-key and "
                "--tls-client-ca, or listen on a unix socket"
            )
        return listen.removeprefix("tcp://")
    path = listen.removeprefix("unix://")
    if not path.startswith("/"):
        raise ConfigError(f"--listen {listen}: a unix socket path must be absolute")
    return f"unix://{path}"


def serve(
    service: NodeService, listen: str, tls: TlsFiles | None = None, workers: int = 16
) -> tuple[grpc.Server, health.HealthServicer]:
    address = parse_listen(listen, tls)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"))
    node_pb2_grpc.add_NodeServiceServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if address.startswith("unix://"):
        socket_path = Path(address.removeprefix("unix://"))
        _prepare_socket_dir(socket_path)
        server.add_insecure_port(address)
        server.start()
        # Group read/write only: the CLI runs as root or in the daemon's group.
        os.chmod(socket_path, SOCKET_MODE)
    else:
        assert tls is not None
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.client_ca.read_bytes(),
            require_client_auth=True,
        )
        server.add_secure_port(address, credentials)
        server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer


def serve_startup(service: StartupService, path: Path) -> grpc.Server:
    """One pod's start-up lock on its own unix socket. Its waiting or holding launcher keeps
    a worker busy; anything past that is refused."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=_LAUNCHER_WORKERS, thread_name_prefix="startup"),
        maximum_concurrent_rpcs=_LAUNCHER_MAX_CALLS,
    )
    node_pb2_grpc.add_StartupServiceServicer_to_server(service, server)
    _prepare_socket_dir(path, LAUNCHER_SOCKET_DIR_MODE)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    os.chmod(path, LAUNCHER_SOCKET_MODE)
    return server


def _prepare_socket_dir(path: Path, mode: int = SOCKET_DIR_MODE) -> None:
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=mode)
    # A stale socket from a previous run would make the bind fail.
    if path.is_socket():
        path.unlink()
    elif path.exists():
        raise ConfigError(f"--listen {path}: exists and is not a socket; refusing to replace it")
