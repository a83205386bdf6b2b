"""How the daemon is reached: a 0660 unix socket by default, TCP only with mutual TLS, the
standard health and reflection services, and Prometheus metrics."""

from __future__ import annotations

import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hack.devcluster.node import Node, free_port


def test_socket_is_group_only(node: Node) -> None:
    mode = stat.S_IMODE(node.socket.stat().st_mode)
    assert mode == 0o660


def test_health_and_reflection(node: Node) -> None:
    with grpc.insecure_channel(f"unix://{node.socket}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="mipart.api.v1.NodeService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert "mipart.api.v1.NodeService" in names


def test_tcp_without_mtls_is_refused(stopped_node: Node) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mipart.agent.main",
            "--listen",
            "tcp://127.0.0.1:0",
            "--state-dir",
            str(stopped_node.tmp / "state"),
        ],
        capture_output=True,
        text=True,
        env=stopped_node.env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TCP needs mutual TLS" in result.stderr


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
        "-days",
        "1",
        "-subj",
        "/CN=mipart test CA",
    )
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"), ("client", "DNS:mipart-smi")):
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
            "-subj",
            f"/CN={name}",
        )
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-out",
            str(d / f"{name}.crt"),
            "-days",
            "1",
            "-extfile",
            str(ext),
        )
    return d


def test_mtls_tcp_needs_a_client_certificate(stopped_node: Node, pki: Path) -> None:
    port = free_port()
    node = stopped_node
    server_tls = [
        "--tls-cert",
        str(pki / "server.crt"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-client-ca",
        str(pki / "ca.crt"),
    ]
    node.process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mipart.agent.main",
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--state-dir",
            str(node.tmp / "state"),
            "--metrics-address",
            "off",
            *server_tls,
        ],
        env=node.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tls = ["--address", f"127.0.0.1:{port}", "--tls-ca", str(pki / "ca.crt")]
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "mipart.smi.main",
            *tls,
            "--tls-cert",
            str(pki / "client.crt"),
            "--tls-key",
            str(pki / "client.key"),
            "--json",
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        env=node.env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"compute_partition": "SPX"' in ok.stdout
    # Without a client certificate the handshake fails: no answer, whatever the request.
    ca = (pki / "ca.crt").read_bytes()
    credentials = grpc.ssl_channel_credentials(ca)
    with (
        grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=3)


def test_metrics(stopped_node: Node) -> None:
    port = free_port()
    stopped_node.extra_args = ["--metrics-address", f"127.0.0.1:{port}"]
    stopped_node.start()
    stopped_node.smi_ok("set", "compute", "DPX", "--gpu", "3")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'mipart_gpu_partitions{gpu="3"} 2.0' in text
    assert 'mipart_gpu_partitions{gpu="0"} 1.0' in text
    assert 'mipart_partition_operations_total{kind="compute",result="Succeeded"} 1.0' in text
    assert 'mipart_partition_memory_bytes{partition="gpu3-dpx-1"}' in text


def test_missing_libamd_smi_is_a_clear_error(stopped_node: Node, tmp_path: Path) -> None:
    env = {**stopped_node.env, "ROCM_PATH": str(tmp_path), "ROCM_HOME": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mipart.agent.main",
            "--socket",
            str(stopped_node.socket),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot load amdsmi/libamd_smi.so: set ROCM_PATH" in result.stderr
    assert "Traceback" not in result.stderr
