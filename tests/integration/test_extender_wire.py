"""The extender's HTTP surface under hostile input, and its standby behaviour."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hack.devcluster import kube, pki, readiness
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.extender_link import ExtenderLink
from hack.devcluster.procs import Process, free_ports, wait_until
from hack.devcluster.readiness import http_ok
from hack.devcluster.stack import Stack
from mipart.contract.annotations import ALLOCATION
from mipart.contract.resources import PARTITION_RESOURCE

pytestmark = pytest.mark.integration

VERBS = ("/filter", "/prioritize", "/bind", "/preempt")


@pytest.fixture(scope="module")
def extender(
    control_plane: ControlPlane, emulator_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack(control_plane, emulator_build, tmp_path_factory.mktemp("wire"))
    stack.start_daemon(control_plane.node_names[0], dict.fromkeys(range(4), "CPX"))
    stack.start_extender()
    yield stack
    stack.stop(control_plane.api_client())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
pod_like = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": st.text(max_size=10), "uid": st.text(max_size=10)},
            optional={
                "annotations": st.dictionaries(
                    st.sampled_from(
                        [
                            "mipart.io/memory",
                            "mipart.io/partitions",
                            "mipart.io/qos",
                            "mipart.io/partition-mode",
                            "mipart.io/sharing",
                            "mipart.io/model",
                            "mipart.io/x",
                        ]
                    ),
                    st.text(max_size=12) | st.sampled_from(["8Gi", "2", "CPX", "latency"]),
                    max_size=4,
                )
            },
        )
    },
    optional={"spec": json_values},
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "Pod": pod_like | json_values,
            "NodeNames": st.lists(
                st.sampled_from(["mi300x-0", "mi300x-1", "nope"]) | st.text(max_size=6), max_size=4
            )
            | json_values,
            "Nodes": json_values,
            "PodName": st.text(max_size=8),
            "PodNamespace": st.sampled_from(["default", "x"]),
            "PodUID": st.text(max_size=8),
            "Node": st.sampled_from(["mi300x-0", "nope"]),
            "NodeNameToMetaVictims": st.dictionaries(
                st.sampled_from(["mi300x-0", "nope"]),
                st.fixed_dictionaries(
                    {
                        "Pods": st.lists(
                            st.fixed_dictionaries({"UID": st.text(max_size=6)}), max_size=3
                        ),
                        "NumPDBViolations": st.integers(0, 3),
                    }
                )
                | json_values,
                max_size=2,
            ),
        },
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(verb=st.sampled_from(VERBS), body=bodies, raw=st.booleans())
def test_fuzzed_bodies_never_get_a_5xx_or_crash(
    extender: Stack, control_plane: ControlPlane, verb: str, body: Any, raw: bool
) -> None:
    payload = json.dumps(body).encode()
    if raw:  # not even JSON
        payload = payload[: len(payload) // 2] + b"\x00{"
    connection = control_plane.extender.connection()
    connection.request("POST", verb, payload, {"Content-Type": "application/json"})
    reply = connection.getresponse()
    text = reply.read().decode()
    connection.close()
    assert reply.status in (200, 400), text
    assert "internal error" not in text
    assert extender.extender is not None
    assert extender.extender.alive()


POD = {"metadata": {"name": "p", "uid": "u", "annotations": {"mipart.io/memory": "8Gi"}}}


@pytest.mark.parametrize("verb", ["/filter", "/prioritize"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([POD], "ExtenderArgs must be an object"),
        ({"NodeNames": ["mi300x-0"]}, "'Pod' must be a pod object"),
        ({"Pod": POD, "NodeNames": None}, "configure the extender with nodeCacheCapable: true"),
        ({"Pod": POD, "NodeNames": "mi300x-0"}, "'NodeNames' must be a list of node names"),
        ({"Pod": POD, "NodeNames": ["mi300x-0", 7]}, "'NodeNames' must be a list of node names"),
    ],
)
def test_bad_extender_args_get_a_400_that_names_the_field(
    extender: Stack, control_plane: ControlPlane, verb: str, body: Any, message: str
) -> None:
    status, answer = post_json(control_plane.extender, verb, body)
    assert status == 400
    assert message in answer["Error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([POD], "ExtenderPreemptionArgs must be an object"),
        ({"Pod": {"metadata": None}}, "'Pod' must be a pod object with metadata"),
        ({"Pod": {"spec": {}}}, "'Pod' must be a pod object with metadata"),
        ({"Pod": POD, "NodeNameToMetaVictims": []}, "'NodeNameToMetaVictims' must be an object"),
    ],
)
def test_bad_preemption_args_get_a_400_that_names_the_field(
    extender: Stack, control_plane: ControlPlane, body: Any, message: str
) -> None:
    status, answer = post_json(control_plane.extender, "/preempt", body)
    assert status == 400
    assert message in answer["Error"]


def post_json(link: ExtenderLink, verb: str, body: Any) -> tuple[int, Any]:
    connection = link.connection()
    connection.request("POST", verb, json.dumps(body), {"Content-Type": "application/json"})
    reply = connection.getresponse()
    answer = json.loads(reply.read())
    connection.close()
    return reply.status, answer


# The leading scheduler's Lease holder is "<this host's name>_<uuid>": a pod whose name is a
# prefix of that host's name is a standby too.
@pytest.mark.parametrize("identity", ["another-pod", socket.gethostname()[:-1]])
def test_a_standby_refuses_until_its_scheduler_leads(
    control_plane: ControlPlane, extender: Stack, tmp_path: Path, identity: str
) -> None:
    token = control_plane.service_account_kubeconfig("mipart-system", "mipart-scheduler")
    (port,) = free_ports(1)
    standby = Process.start(
        "standby-extender",
        [
            sys.executable,
            "-m",
            "mipart.scheduler_extender.main",
            "--listen",
            f"127.0.0.1:{port}",
            "--kubeconfig",
            str(token),
            "--identity-prefix",
            identity,
        ],
        tmp_path / "standby.log",
        detach=False,
    )
    try:

        def refuses() -> bool:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/readyz")
            reply = connection.getresponse()
            body = reply.read().decode()
            return reply.status == 503 and "is a standby" in body

        wait_until("the standby to refuse", refuses, timeout=60, process=standby)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        pod = {"metadata": {"name": "p", "uid": "u", "annotations": {"mipart.io/memory": "8Gi"}}}
        connection.request(
            "POST", "/filter", json.dumps({"Pod": pod, "NodeNames": ["mi300x-0"], "Nodes": None})
        )
        answer = json.loads(connection.getresponse().read())
        assert answer["NodeNames"] == []
        assert "is a standby" in answer["Error"]
        # The leader's own extender serves.
        assert http_ok(control_plane.extender.status_url("/readyz"))
    finally:
        standby.stop()


def call(link: ExtenderLink, verb: str, body: dict[str, Any]) -> Any:
    connection = link.connection()
    connection.request("POST", verb, json.dumps(body), {"Content-Type": "application/json"})
    reply = connection.getresponse()
    assert reply.status == 200
    return json.loads(reply.read())


def test_filter_tells_which_rejections_eviction_could_change(
    extender: Stack, control_plane: ControlPlane
) -> None:
    """kube-scheduler tries preemption only on FailedNodes, never on
    FailedAndUnresolvableNodes: a node without GPUs there, a full CPX node here."""
    gpu_node, other = control_plane.node_names[0], "not-a-gpu-node"
    link = control_plane.extender

    def ask(verb: str, memory: str, names: list[str], **more: str) -> Any:
        annotations = {"mipart.io/memory": memory} | {f"mipart.io/{k}": v for k, v in more.items()}
        pod = {"metadata": {"name": "p", "uid": "u", "annotations": annotations}}
        return call(link, verb, {"Pod": pod, "NodeNames": names, "Nodes": None})

    fits = ask("/filter", "8Gi", [gpu_node, other])
    assert fits["NodeNames"] == [gpu_node]
    assert fits["FailedNodes"] == {}
    assert fits["FailedAndUnresolvableNodes"] == {other: "no GPU inventory for this node"}
    # prioritize is asked of exactly what filter kept; it answers for each name it is sent.
    assert [s["Host"] for s in ask("/prioritize", "8Gi", [gpu_node])] == [gpu_node]
    assert ask("/prioritize", "8Gi", [other, gpu_node])[0] == {"Host": other, "Score": 0}

    no_dpx = ask("/filter", "40Gi", [gpu_node, other], **{"partition-mode": "DPX"})
    assert no_dpx["NodeNames"] == []
    assert no_dpx["FailedNodes"] == {gpu_node: "no usable DPX partition"}
    assert set(no_dpx["FailedAndUnresolvableNodes"]) == {other}


# -- only kube-scheduler reaches the verbs -------------------------------------------------


def bind_as(context: ssl.SSLContext | None, link: ExtenderLink, body: dict[str, Any]) -> bytes:
    """POST /bind to the verbs port with this TLS identity (None: plain HTTP); what came back
    before the server closed, or b"" when the TLS handshake was refused."""
    payload = json.dumps(body).encode()
    request = (
        f"POST /bind HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", link.port), timeout=10) as raw:
            conn = raw if context is None else context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(request)
            while chunk := conn.recv(65536):
                received += chunk
    except (ssl.SSLError, ConnectionError):
        pass  # in TLS 1.3 the refusal reaches the client when it reads
    return received


def test_only_the_scheduler_certificate_reaches_the_verbs(
    extender: Stack, control_plane: ControlPlane, api: Any, namespace: str
) -> None:
    """kube-scheduler calls the extender over HTTPS with a client certificate from a CA of
    its own (the running scheduler's configuration says so, and it binds a pod through it);
    plain HTTP, no certificate, and a certificate the cluster CA signed for a cluster
    administrator all get nothing, and the pod they try to bind stays unbound."""
    link = control_plane.extender
    assert link.tls
    config = yaml.safe_load((control_plane.state_dir / "scheduler-config.yaml").read_text())
    (entry,) = config["extenders"]
    assert entry["urlPrefix"] == f"https://127.0.0.1:{link.port}"
    assert entry["tlsConfig"]["certFile"] == str(link.scheduler.cert)

    core = kube.core(api)
    target = {
        "metadata": {"name": "target", "annotations": {"mipart.io/memory": "8Gi"}},
        # A scheduler no one runs: only the callers below could bind it.
        "spec": {
            "schedulerName": "no-such-scheduler",
            "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}],
        },
    }
    uid = core.create_namespaced_pod(namespace, target).metadata.uid
    body = {"PodName": "target", "PodNamespace": namespace, "PodUID": uid}
    body["Node"] = control_plane.node_names[0]
    trusting = ssl.create_default_context(cafile=str(link.cluster_ca))
    admin = readiness.client_tls(
        link.cluster_ca,
        pki.KeyPair(*(link.pki_dir / f"kubernetes-admin.{e}" for e in ("crt", "key"))),
    )
    for name, context in (("plain HTTP", None), ("no certificate", trusting), ("admin", admin)):
        answer = bind_as(context, link, body)
        assert b"HTTP/1.1" not in answer, f"{name}: {answer[:200]!r}"
    assert core.read_namespaced_pod("target", namespace).spec.node_name is None

    # The scheduler itself, through the same port: a pod as the webhook leaves it is bound,
    # with its allocation.
    placed = {
        "metadata": {"name": "placed", "annotations": {"mipart.io/memory": "8Gi"}},
        "spec": {
            "schedulerName": "mipart-scheduler",
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai",
                    "resources": {"limits": {PARTITION_RESOURCE: "1"}},
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, placed)

    def bound() -> bool:
        pod = core.read_namespaced_pod("placed", namespace)
        return bool(pod.spec.node_name) and ALLOCATION in (pod.metadata.annotations or {})

    wait_until("the scheduler to bind through the TLS extender", bound, timeout=60)
    # Probes and metrics stay on the plain status port, which needs no certificate.
    assert http_ok(link.status_url("/readyz"))
