"""Connecting to a node's daemon: its unix socket, or mutual-TLS TCP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from mipart.api.v1 import node_pb2_grpc

DEFAULT_SOCKET = "/run/mipart/node.sock"


@dataclass(frozen=True, slots=True)
class Endpoint:
    socket: str | None = None
    address: str | None = None  # host:port, mTLS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    def channel(self) -> grpc.Channel:
        if self.address is None:
            return grpc.insecure_channel(self._unix_target())
        if not (self.tls_cert and self.tls_key and self.tls_ca):
            raise ValueError(
                f"--address {self.address}: TCP needs mutual TLS; give --tls-cert, --tls-key "
                "and --tls-ca (or use --socket)"
            )
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes(),
            private_key=self.tls_key.read_bytes(),
            certificate_chain=self.tls_cert.read_bytes(),
        )
        return grpc.secure_channel(self.address, credentials)

    def describe(self) -> str:
        return self.address or self._unix_target()

    def _unix_target(self) -> str:
        # gRPC reads unix://a/b as authority "a"; an absolute path is always unambiguous.
        return f"unix://{Path(self.socket or DEFAULT_SOCKET).absolute()}"


def stub(channel: grpc.Channel) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(channel)
