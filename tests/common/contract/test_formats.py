"""Each format two processes exchange reads back as it was written, and a bad one is refused
with the field named: the allocation annotation (extender -> daemon, controller, launcher) and
the container variables (device plugin and webhook -> mipart-vllm)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipart.agent.deviceplugin import cdi
from mipart.contract import allocation, environment
from mipart.contract.annotations import ALLOCATION, MODEL
from mipart.contract.environment import AllocationError, ContainerAllocation
from mipart.geometry import (
    ComputeMode,
)
from mipart.placement import Allocation, Sharing
from tests.support.inventories import gpu, node

partition_ids = st.lists(
    st.from_regex(r"gpu[0-7]-(spx|dpx|qpx|cpx)-[0-7]", fullmatch=True),
    min_size=1,
    max_size=8,
    unique=True,
)
allocations = st.builds(
    Allocation,
    pod=st.just("ns/pod"),
    pod_uid=st.just("uid-1"),
    node=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    partition_ids=partition_ids.map(tuple),
    memory_bytes=st.integers(min_value=1, max_value=2**40),
    sharing=st.sampled_from(Sharing),
)


@given(allocations)
def test_an_allocation_reads_back_as_written(written: Allocation) -> None:
    text = allocation.encode(written)
    assert json.loads(text)["v"] == allocation.VERSION
    assert allocation.decode(text, pod=written.pod, pod_uid=written.pod_uid) == written


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("not json", "is not JSON"),
        ('{"v": 2, "node": "n", "partitions": ["gpu0-spx-0"], "memoryBytes": 1}', "version 1"),
        ('{"v": 1, "partitions": ["gpu0-spx-0"], "memoryBytes": 1}', "'node'"),
        ('{"v": 1, "node": "n", "partitions": "gpu0-spx-0", "memoryBytes": 1}', "partitions"),
        (
            '{"v": 1, "node": "n", "partitions": ["gpu0-spx-0"], "memoryBytes": "1Gi"}',
            "memoryBytes",
        ),
        ('{"v": 1, "node": "n", "partitions": ["gpu0-spx-0"], "memoryBytes": true}', "memoryBytes"),
        (
            '{"v": 1, "node": "n", "partitions": ["gpu0-spx-0"], "memoryBytes": 1, "sharing": "x"}',
            "'x' is not a valid Sharing",
        ),
    ],
)
def test_a_bad_allocation_names_what_is_wrong(text: str, names: str) -> None:
    with pytest.raises(ValueError, match="allocation of ns/p") as err:
        allocation.decode(text, pod="ns/p", pod_uid="u")
    assert names in str(err.value)


container_allocations = st.builds(
    ContainerAllocation,
    partitions=partition_ids.map(tuple),
    memory_limit_bytes=st.integers(min_value=1, max_value=2**40),
    partition_memory_bytes=st.integers(min_value=1, max_value=2**40),
    memory_pools=st.lists(
        st.from_regex(r"gpu[0-7]-pool[0-3]", fullmatch=True), min_size=1, unique=True
    ).map(tuple),
    startup_socket=st.one_of(st.none(), st.just("/run/mipart/launcher/startup.sock")),
)


@given(container_allocations)
def test_the_container_variables_read_back_as_written(written: ContainerAllocation) -> None:
    assert environment.from_environ(environment.to_environ(written)) == written


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        (environment.PARTITIONS, "", f"{environment.PARTITIONS} is not set"),
        (environment.MEMORY_POOL, " , ", f"{environment.MEMORY_POOL} is not set"),
        (environment.MEMORY_LIMIT_BYTES, "20Gi", f"{environment.MEMORY_LIMIT_BYTES}='20Gi'"),
        (environment.PARTITION_MEMORY_BYTES, "0", f"{environment.PARTITION_MEMORY_BYTES}='0'"),
    ],
)
def test_bad_container_variables_name_the_variable(variable: str, value: str, names: str) -> None:
    good = environment.to_environ(
        ContainerAllocation(("gpu0-cpx-0",), 20 * 2**30, 24 * 2**30, ("gpu0-pool0",))
    )
    with pytest.raises(AllocationError) as err:
        environment.from_environ({**good, variable: value})
    assert names in str(err.value)


def test_the_device_plugins_cdi_spec_is_what_the_launcher_reads() -> None:
    """The writer (the daemon's CDI spec) and the reader (mipart-vllm) through the real
    spec builder, not through the contract alone."""
    inventory = node(gpu(0, ComputeMode.CPX))
    parts = inventory.gpus[0].partitions
    bound = Allocation("ns/p", "u", "n", ("gpu0-cpx-0", "gpu0-cpx-1"), 20 * 2**30, Sharing.SHARED)
    body = cdi.spec("slot-3", bound, inventory, launcher_socket=None)
    env = dict(line.split("=", 1) for line in body["devices"][0]["containerEdits"]["env"])
    read = environment.from_environ(env)
    assert read.partitions == bound.partition_ids
    assert read.memory_limit_bytes == bound.memory_bytes
    assert read.partition_memory_bytes == parts[0].geometry.memory_bytes
    assert read.memory_pools == ("gpu0-pool0",)
    assert env["HIP_VISIBLE_DEVICES"] == "0,1"


def test_the_webhooks_downward_api_variables_name_the_contracts_annotations() -> None:
    assert environment.annotation_env(environment.ALLOCATION, ALLOCATION) == {
        "name": "MIPART_ALLOCATION",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['mipart.io/allocation']"}},
    }
    assert environment.annotation_env(environment.MODEL, MODEL)["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.annotations['mipart.io/model']"
    }
