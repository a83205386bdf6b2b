"""The extender's HTTP surface under hostile input, and its standby behaviour."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import Process, free_ports, wait_until
from hack.devcluster.readiness import http_ok
from hack.devcluster.stack import Stack

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
    connection = http.client.HTTPConnection("127.0.0.1", control_plane.extender_port, timeout=10)
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
    status, answer = post_json(control_plane.extender_port, verb, body)
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
    status, answer = post_json(control_plane.extender_port, "/preempt", body)
    assert status == 400
    assert message in answer["Error"]


def post_json(port: int, verb: str, body: Any) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
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
        assert http_ok(f"http://127.0.0.1:{control_plane.extender_port}/readyz")
    finally:
        standby.stop()


def call(port: int, verb: str, body: dict[str, Any]) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
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
    port = control_plane.extender_port

    def ask(verb: str, memory: str, names: list[str], **more: str) -> Any:
        annotations = {"mipart.io/memory": memory} | {f"mipart.io/{k}": v for k, v in more.items()}
        pod = {"metadata": {"name": "p", "uid": "u", "annotations": annotations}}
        return call(port, verb, {"Pod": pod, "NodeNames": names, "Nodes": None})

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
