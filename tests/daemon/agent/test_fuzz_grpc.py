"""Malformed and random requests to NodeService: each gets a clear status code and a message
that names the field; none crashes the daemon or changes anything it should not."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hack.devcluster.node import Node
from mipart.api.v1 import node_pb2 as pb
from mipart.api.v1 import node_pb2_grpc as pb_grpc

CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
modes = st.one_of(
    st.sampled_from(["SPX", "DPX", "QPX", "CPX", "TPX", "NPS1", "NPS4", "spx", ""]),
    st.text(max_size=12),
)


@pytest.fixture
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix://{node.socket}") as ch:
        yield ch


def outcome(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        events = list(call)  # type: ignore[call-overload]
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    assert events, "a change streams at least its final event"
    return grpc.StatusCode.OK, events[-1].phase


@FUZZ
@given(gpu=st.integers(0, 2**32 - 1), mode=modes)
def test_random_compute_requests(node: Node, channel: grpc.Channel, gpu: int, mode: str) -> None:
    stub = pb_grpc.NodeServiceStub(channel)
    code, detail = outcome(
        stub.SetComputePartition(
            pb.SetComputePartitionRequest(gpu_index=gpu, compute_partition=mode, dry_run=True),
            timeout=30,
        )
    )
    if code is grpc.StatusCode.OK:
        assert detail in ("Planned", "Succeeded")
    else:
        assert code in CLEAR, (code, detail)
        assert detail.startswith(("compute_partition:", "gpu_index:", "gpu ")), detail
    assert node.process is not None
    assert node.process.poll() is None


@FUZZ
@given(mode=modes, dry_run=st.booleans())
def test_random_memory_requests(
    node: Node, channel: grpc.Channel, mode: str, dry_run: bool
) -> None:
    stub = pb_grpc.NodeServiceStub(channel)
    code, detail = outcome(
        stub.SetMemoryPartition(
            pb.SetMemoryPartitionRequest(memory_partition=mode, dry_run=dry_run), timeout=30
        )
    )
    # Every GPU is SPX, so no memory change may pass; NPS1 is already in place.
    if code is grpc.StatusCode.OK:
        assert detail in ("Planned", "Succeeded")
    else:
        assert code in CLEAR, (code, detail)
        assert detail, "an error says why"
    assert node.show()["memory_partition"] == "NPS1"


@FUZZ
@given(payload=st.binary(max_size=64))
def test_garbage_bytes_get_a_status_not_a_crash(
    node: Node, channel: grpc.Channel, payload: bytes
) -> None:
    for method in ("SetComputePartition", "SetMemoryPartition"):
        call = channel.unary_stream(
            f"/mipart.api.v1.NodeService/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        code = grpc.StatusCode.OK
        try:
            list(call(payload, timeout=30))
        except grpc.RpcError as err:
            code = err.code()
        # Undecodable bytes are grpc's own INTERNAL "could not deserialize"; bytes that decode
        # into a request are judged like any other request.
        assert code in CLEAR | {grpc.StatusCode.OK, grpc.StatusCode.INTERNAL}
    assert node.process is not None
    assert node.process.poll() is None
    assert node.show()["gpus"][0]["compute_partition"] in ("SPX", "DPX", "QPX", "CPX")
