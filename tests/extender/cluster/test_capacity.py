"""GPUNode objects into the placement engine's capacity, and which updates change it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hack.devcluster.kube import bound_pod
from mipart.cluster.capacity import ready_of, same_inventory
from mipart.cluster.view import ClusterState
from mipart.geometry import ComputeMode, MemoryMode, partitions_of
from mipart.kube.api import KubeApi

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def gpunode(beat: datetime = NOW, mode: str = "SPX", ready: str = "True") -> dict[str, Any]:
    return {
        "metadata": {"name": "n", "resourceVersion": "1"},
        "spec": {},
        "status": {
            "heartbeatTime": stamp(beat),
            "conditions": [{"type": "Ready", "status": ready}],
            "memoryPartition": "NPS1",
            "gpus": [
                {
                    "index": 0,
                    "computePartition": mode,
                    "health": "Healthy",
                    "phase": "Ready",
                    "partitions": [
                        {"id": p.id} for p in partitions_of(0, ComputeMode(mode), MemoryMode.NPS1)
                    ],
                }
            ],
        },
    }


def test_a_heartbeat_is_not_a_new_inventory() -> None:
    beat = gpunode(NOW + timedelta(seconds=5))
    beat["metadata"]["resourceVersion"] = "2"
    assert same_inventory(gpunode(), beat)


@pytest.mark.parametrize(
    "change",
    [
        lambda g: g["spec"].update(gpus=[{"index": 0, "drained": True}]),
        lambda g: g["status"]["gpus"][0].update(health="Unhealthy"),
        lambda g: g["status"].update(memoryPartition="NPS4"),
        lambda g: g["status"]["conditions"][0].update(status="False"),
        lambda g: g["status"].pop("gpus"),
    ],
)
def test_any_other_change_is(change: Any) -> None:
    changed = copy.deepcopy(gpunode())
    change(changed)
    assert not same_inventory(gpunode(), changed)


def test_readiness_needs_a_fresh_heartbeat_and_a_ready_daemon() -> None:
    assert ready_of(gpunode(), now=NOW + timedelta(seconds=30), stale_after_s=30)
    assert not ready_of(gpunode(), now=NOW + timedelta(seconds=31), stale_after_s=30)
    assert not ready_of(gpunode(ready="False"), now=NOW, stale_after_s=30)
    no_beat = gpunode()
    del no_beat["status"]["heartbeatTime"]
    assert not ready_of(no_beat, now=NOW, stale_after_s=30)


def test_the_view_is_rebuilt_only_when_the_offer_or_readiness_changes() -> None:
    cluster = ClusterState(KubeApi(None), scheduler_name="s", stale_after_s=30)
    fresh = gpunode(datetime.now(UTC))
    cluster._on_gpunode("n", None, fresh)
    first = cluster.view.capacity("n")
    assert first is not None
    assert first.ready

    beat = gpunode(datetime.now(UTC) + timedelta(seconds=1))
    cluster._on_gpunode("n", fresh, beat)
    assert cluster.view.capacity("n") is first

    cpx = gpunode(datetime.now(UTC), mode="CPX")
    cluster._on_gpunode("n", beat, cpx)
    capacity = cluster.view.capacity("n")
    assert capacity is not None
    assert capacity is not first
    assert len(capacity.partitions) == 8

    # A heartbeat after a stale one makes the node ready again, though nothing else changed.
    stale = gpunode(datetime.now(UTC) - timedelta(minutes=5), mode="CPX")
    cluster._on_gpunode("n", cpx, stale)
    assert not cluster.view.capacity("n").ready  # type: ignore[union-attr]
    cluster._on_gpunode("n", stale, cpx)
    assert cluster.view.capacity("n").ready  # type: ignore[union-attr]


def test_a_pods_status_updates_keep_its_allocation_and_finishing_frees_it() -> None:
    cluster = ClusterState(KubeApi(None), scheduler_name="s", stale_after_s=30)
    cluster._on_gpunode("n", None, gpunode(datetime.now(UTC)))
    pending: dict[str, Any] = {"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {}}
    bound = bound_pod("p", "n", ["gpu0-spx-0"], 8 * 2**30)
    bound["metadata"].update(namespace="d", uid="u")
    cluster._on_pod("d/p", None, pending)
    cluster._on_pod("d/p", pending, bound)
    assert cluster.view.allocation("u") is not None

    running = copy.deepcopy(bound)
    running["status"] = {"phase": "Running", "podIP": "10.0.0.1"}
    cluster._on_pod("d/p", bound, running)
    assert cluster.view.allocation("u") is not None

    done = copy.deepcopy(running)
    done["status"]["phase"] = "Succeeded"
    cluster._on_pod("d/p", running, done)
    assert cluster.view.allocation("u") is None
