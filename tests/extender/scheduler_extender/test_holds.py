"""The extender honours the re-partition planner's hold (mipart.io/planned-partitions): while
it stands, filter passes only the held node and only if exactly those partitions would be
accepted, prioritize agrees, and bind allocates exactly them; once it expires it is ignored
and the planned mode alone applies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mipart.cluster.holds import HELD
from mipart.contract import planned_partitions
from mipart.contract.annotations import PLANNED_MODE, PLANNED_PARTITIONS
from mipart.contract.planned_partitions import PlannedPartitions
from mipart.scheduler_extender.metrics import ExtenderMetrics
from mipart.scheduler_extender.verbs import Verbs
from tests.support.fake_cluster import GIB, FakeKube, gpunode, queued_pod, running_pod

NOW = datetime.now(UTC).replace(microsecond=0)
EXPIRES = NOW + timedelta(seconds=120)
HELD_TO = f"held by the re-partition planner to n1 gpu0-cpx-3 until {EXPIRES:%Y-%m-%dT%H:%M:%SZ}"


def released(name: str, *, hold: str | None = None, **more: str) -> dict[str, Any]:
    """A pod the controller released: gate gone, planned mode and hold written."""
    pod = queued_pod(name, **more)
    pod["spec"]["schedulingGates"] = []
    text = hold or planned_partitions.encode(PlannedPartitions("n1", ("gpu0-cpx-3",), EXPIRES))
    pod["metadata"]["annotations"].update({PLANNED_MODE: "CPX", PLANNED_PARTITIONS: text})
    return pod


class Extender:
    def __init__(self, now: datetime = NOW) -> None:
        self.kube = FakeKube()
        self.kube.put_gpunode(gpunode("n1", {0: "CPX"}))
        self.kube.put_gpunode(gpunode("n2", {0: "SPX", 1: "CPX"}))
        self.reported: list[str] = []
        self.metrics = ExtenderMetrics(CollectorRegistry())
        self.now = now
        self.verbs = Verbs(
            self.kube.state,
            self.kube.api,
            self.metrics,
            serving=lambda: None,
            report_unschedulable=lambda _pod, message: self.reported.append(message),
            clock=lambda: self.now,
        )

    def filter(self, name: str) -> dict[str, Any]:
        return self.verbs.filter({"Pod": self.kube.pod(name), "NodeNames": ["n1", "n2"]})

    def prioritize(self, name: str) -> dict[str, int]:
        answer = self.verbs.prioritize({"Pod": self.kube.pod(name), "NodeNames": ["n1", "n2"]})
        return {a["Host"]: a["Score"] for a in answer}

    def bind(self, name: str, node: str) -> str:
        uid = self.kube.pod(name)["metadata"]["uid"]
        args = {"PodName": name, "PodNamespace": "ns", "PodUID": uid, "Node": node}
        return self.verbs.bind(args)["Error"]

    def rejections(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "mipart_extender_rejections_total", {"reason": kind}
        )
        return value or 0.0


def test_filter_passes_only_the_held_node_and_reserves_nothing() -> None:
    ext = Extender()
    ext.kube.put_pod(released("p"))
    answer = ext.filter("p")
    assert answer["NodeNames"] == ["n1"]
    assert answer["FailedNodes"] == {}
    # Not a room eviction could make: the scheduler must not preempt for it elsewhere.
    assert answer["FailedAndUnresolvableNodes"] == {"n2": HELD_TO}
    assert ext.kube.state.view.allocations() == ()
    assert ext.rejections(HELD) == 1
    assert ext.prioritize("p") == {"n1": 10, "n2": 0}


def test_filter_refuses_the_held_node_when_its_partitions_are_taken() -> None:
    ext = Extender()
    ext.kube.put_pod(running_pod("other", "n1", "gpu0-cpx-3", 20 * GIB))
    ext.kube.put_pod(released("p"))
    answer = ext.filter("p")
    assert answer["NodeNames"] == []
    reason = answer["FailedAndUnresolvableNodes"]["n1"]
    assert reason.startswith(f"{HELD_TO}: partition gpu0-cpx-3: 20Gi asked, ")
    # Free partitions of the same mode elsewhere on n1 and n2 are not taken instead.
    assert answer["FailedAndUnresolvableNodes"]["n2"] == HELD_TO
    assert ext.reported == [f"1 node: {HELD_TO}; 1 node: {reason}"]
    assert ext.prioritize("p") == {"n1": 0, "n2": 0}


def test_bind_allocates_exactly_the_held_partitions_with_the_pods_limit_and_sharing() -> None:
    ext = Extender()
    ext.kube.put_pod(released("p", sharing="exclusive"))
    assert ext.bind("p", "n1") == ""
    allocation = ext.kube.allocation("p")
    assert allocation is not None
    assert (allocation.node, allocation.partition_ids) == ("n1", ("gpu0-cpx-3",))
    assert allocation.memory_bytes == 20 * GIB
    assert allocation.sharing.value == "exclusive"


def test_bind_refuses_another_node_and_taken_partitions() -> None:
    ext = Extender()
    ext.kube.put_pod(released("p"))
    assert ext.bind("p", "n2") == f"pod ns/p is {HELD_TO}, not on n2"
    # Taken between filter and bind: refused under the lock, nothing bound.
    ext.kube.put_pod(running_pod("other", "n1", "gpu0-cpx-3", 20 * GIB))
    error = ext.bind("p", "n1")
    assert error.startswith("pod ns/p no longer fits on n1: ns/p on n1: partition gpu0-cpx-3")
    assert ext.kube.allocation("p") is None
    assert ext.kube.state.view.allocation("uid-p") is None
    assert ext.metrics.registry.get_sample_value("mipart_extender_bind_conflicts_total") == 2


def test_an_expired_hold_is_ignored_and_the_planned_mode_still_applies() -> None:
    ext = Extender(now=EXPIRES)
    ext.kube.put_pod(released("p"))
    assert sorted(ext.filter("p")["NodeNames"]) == ["n1", "n2"]
    assert set(ext.prioritize("p")) == {"n1", "n2"}
    assert ext.bind("p", "n2") == ""
    allocation = ext.kube.allocation("p")
    assert allocation is not None
    assert allocation.node == "n2"
    assert allocation.partition_ids[0].startswith("gpu1-cpx-")  # CPX, not n2's SPX GPU


def test_a_held_pod_is_not_offered_victims() -> None:
    ext = Extender()
    ext.kube.put_pod(running_pod("other", "n1", "gpu0-cpx-3", 20 * GIB))
    ext.kube.put_pod(released("p"))
    proposal = {"n1": {"Pods": [{"UID": "uid-other"}], "NumPDBViolations": 0}}
    answer = ext.verbs.preempt({"Pod": ext.kube.pod("p"), "NodeNameToMetaVictims": proposal})
    assert answer == {"NodeNameToMetaVictims": {}}


@pytest.mark.parametrize(
    "text",
    [
        "gpu0-cpx-3",
        '{"v":1,"node":"n1","partitions":["gpu0-cpx-3"],"expires":"tomorrow"}',
    ],
)
def test_a_malformed_hold_is_a_clear_refusal_on_every_node(text: str) -> None:
    ext = Extender()
    ext.kube.put_pod(released("p", hold=text))
    answer = ext.filter("p")
    assert answer["NodeNames"] == []
    for reason in answer["FailedAndUnresolvableNodes"].values():
        assert reason.startswith(f"bad annotations: {PLANNED_PARTITIONS}: {text!r} is not valid")
        assert "allowed: {" in reason
    assert ext.bind("p", "n1").startswith(f"pod ns/p: {PLANNED_PARTITIONS}: ")


def test_bind_reads_a_pod_its_cache_has_seen_only_before_its_release() -> None:
    ext = Extender()
    ext.kube.put_pod(queued_pod("p"))  # the watch has not brought the release yet
    fresh = released("p")
    ext.kube.get = lambda _path, **_query: fresh  # type: ignore[method-assign]
    assert ext.bind("p", "n1") == ""
    allocation = ext.kube.allocation("p")
    assert allocation is not None
    assert allocation.partition_ids == ("gpu0-cpx-3",)


def test_a_hold_on_a_node_the_scheduler_ruled_out_is_waived() -> None:
    """kube-scheduler scores every feasible node (percentageOfNodesToScore: 100), so a held
    node missing from filter's list failed its own filters (the node's pod limit, a taint):
    the hold cannot be kept, and the pod is placed by its own request, without the planned
    mode (CPX here), which only the plan's out-of-reach capacity needed."""
    ext = Extender()
    ext.kube.put_gpunode(gpunode("n3", {0: "SPX"}))
    ext.kube.put_pod(released("p"))
    pod = ext.kube.pod("p")
    answer = ext.verbs.filter({"Pod": pod, "NodeNames": ["n3"]})
    assert answer["NodeNames"] == ["n3"]  # SPX only: held to CPX it would fit nowhere here
    assert ext.verbs.prioritize({"Pod": pod, "NodeNames": ["n3"]})[0]["Score"] > 0
    assert ext.bind("p", "n3") == ""
    allocation = ext.kube.allocation("p")
    assert allocation is not None
    assert allocation.partition_ids == ("gpu0-spx-0",)
    # Another extender (a restart) has not waived it: bind elsewhere is refused there.
    other = Extender()
    other.kube.put_pod(released("q"))
    assert other.bind("q", "n2").startswith("pod ns/q is held by the re-partition planner")
