"""The controller's side of a hold: the planner gets its promises back and the partitions of
released, unbound pods as taken; the queue releases an admitted pod with its planned mode and
its hold in the patch that removes the gate; and, with the extender's real verbs, two pods of
one shape admitted together are each bound to their own partitions whatever the order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import mipart.controller.repartition as repartition
from mipart.contract import planned_partitions
from mipart.contract.annotations import PLANNED_MODE, PLANNED_PARTITIONS
from mipart.contract.planned_partitions import PlannedPartitions
from mipart.controller.pods import release_patch
from mipart.controller.releaser import Releaser
from mipart.controller.repartition import Repartitioner
from mipart.geometry import ComputeMode
from mipart.placement import Allocation, Sharing
from mipart.planner import Plan, PlannerPolicy, Promise, Waiting
from mipart.scheduler_extender.metrics import ExtenderMetrics
from mipart.scheduler_extender.verbs import Verbs
from tests.support.fake_cluster import GIB, FakeKube, gpunode, queued_pod, running_pod

CPX = ComputeMode.CPX


class Events:
    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []

    def normal(self, pod: dict[str, Any], reason: str, message: str) -> None:
        self.said.append((pod["metadata"]["name"], reason, message))

    def warn(self, pod: dict[str, Any], reason: str, message: str) -> None:
        self.normal(pod, reason, message)


class Controller:
    """mipart-controller's two loops and the extender's verbs over one FakeKube."""

    def __init__(self, kube: FakeKube, *, hold_s: float = 120.0) -> None:
        self.kube = kube
        registry = CollectorRegistry()
        self.events = Events()
        self.planner = Repartitioner(
            kube.api,
            kube.state,
            registry,
            policy=PlannerPolicy(settle_s=0, cooldown_s=0),
            stale_after_s=60,
            identity="test",
            events=self.events,  # type: ignore[arg-type]
        )
        self.queue = Releaser(
            kube.api,
            kube.state,
            self.events,  # type: ignore[arg-type]
            registry,
            admissions=self.planner.admissions,
            hold_s=hold_s,
        )
        self.verbs = Verbs(
            kube.state, kube.api, ExtenderMetrics(CollectorRegistry()), serving=lambda: None
        )

    def schedule(self, name: str) -> str:
        """One scheduling cycle as kube-scheduler runs it with the extender: filter every
        node, prioritize the feasible, bind to the top score (ties to the first by name)."""
        pod = self.kube.pod(name)
        names = sorted(self.kube.state.view.node_names)
        feasible = self.verbs.filter({"Pod": pod, "NodeNames": names})["NodeNames"]
        assert feasible, f"{name} fits nowhere"
        scores = self.verbs.prioritize({"Pod": pod, "NodeNames": feasible})
        best = min(scores, key=lambda s: (-s["Score"], s["Host"]))["Host"]
        args = {"PodName": name, "PodNamespace": "ns", "PodUID": pod["metadata"]["uid"]}
        error = self.verbs.bind({**args, "Node": best})["Error"]
        assert error == "", error
        return str(best)


@pytest.fixture
def plans(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[list[Allocation], list[Waiting]]]:
    """What each planning round handed the planner: (allocations, demand)."""
    calls: list[tuple[list[Allocation], list[Waiting]]] = []
    real = repartition.plan

    def spy(nodes: Any, allocations: Any, demand: Any, **kwargs: Any) -> Plan:
        calls.append((list(allocations), list(demand)))
        return real(nodes, allocations, demand, **kwargs)

    monkeypatch.setattr(repartition, "plan", spy)
    return calls


def test_the_release_patch_removes_the_gate_and_writes_mode_and_hold_in_one_update() -> None:
    pod = queued_pod("p")
    pod["spec"]["schedulingGates"] = [
        {"name": "example.com/other"},
        *pod["spec"]["schedulingGates"],
    ]
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    hold = PlannedPartitions("n1", ("gpu0-cpx-3",), expires)
    assert release_patch(pod, CPX, hold) == [
        {"op": "test", "path": "/spec/schedulingGates/1/name", "value": "mipart.io/queue"},
        {"op": "remove", "path": "/spec/schedulingGates/1"},
        {"op": "add", "path": "/metadata/annotations/mipart.io~1planned-mode", "value": "CPX"},
        {
            "op": "add",
            "path": "/metadata/annotations/mipart.io~1planned-partitions",
            "value": '{"v":1,"node":"n1","partitions":["gpu0-cpx-3"],'
            '"expires":"2030-01-02T03:04:05Z"}',
        },
    ]
    # A pod that asked for a mode itself gets the hold alone; one the plan did not count, neither.
    assert [op["path"] for op in release_patch(pod, None, hold)][2:] == [
        "/metadata/annotations/mipart.io~1planned-partitions"
    ]
    assert len(release_patch(pod)) == 2


def test_the_queue_releases_an_admitted_pod_with_its_hold(plans: list[Any]) -> None:
    kube = FakeKube()
    kube.put_gpunode(gpunode("n1", {0: "CPX"}))
    kube.put_pod(queued_pod("p"))
    controller = Controller(kube, hold_s=90)
    (admission,) = controller.planner.round().admitted
    before = datetime.now(UTC).replace(microsecond=0)
    controller.queue.round()
    pod = kube.pod("p")
    assert pod["spec"]["schedulingGates"] == []
    annotations = pod["metadata"]["annotations"]
    assert annotations[PLANNED_MODE] == "CPX"
    hold = planned_partitions.decode(annotations[PLANNED_PARTITIONS])
    assert (hold.node, hold.partition_ids) == ("n1", admission.partition_ids)
    assert before + timedelta(seconds=89) <= hold.expires <= before + timedelta(seconds=91)
    # One patch: the gate goes and the hold comes together.
    ((_, operations),) = kube.patches
    assert [op["op"] for op in operations] == ["test", "remove", "add", "add"]
    ((_, _, message),) = [e for e in controller.events.said if e[1] == "Released"]
    assert message.endswith(f"; held to {hold.describe()}")


def test_the_planner_gets_its_promises_back_and_held_partitions_as_taken(
    plans: list[tuple[list[Allocation], list[Waiting]]],
) -> None:
    kube = FakeKube()
    kube.put_gpunode(gpunode("n1", {0: "CPX", 1: "CPX"}))
    for i in range(7):
        kube.put_pod(running_pod(f"run{i}", "n1", f"gpu0-cpx-{i}", 20 * GIB))
    kube.put_pod(queued_pod("big", "150Gi", created="2020-01-01T00:00:00Z"))
    kube.put_pod(queued_pod("small", "20Gi", created="2020-01-01T00:00:01Z"))
    controller = Controller(kube)

    first = controller.planner.round()
    # The 20Gi pod fits the last free CPX partition of GPU 0 as it is; the 150Gi one waits for
    # idle GPU 1 to become SPX.
    (admitted,) = first.admitted
    (promised,) = first.promised
    assert admitted.promise == Promise("n1", ("gpu0-cpx-7",), CPX)
    assert promised.promise == Promise("n1", ("gpu1-spx-0",), ComputeMode.SPX)
    assert all(w.promise is None for w in plans[0][1])

    controller.queue.round()  # releases "small", held to gpu0-cpx-7
    controller.planner.round()
    allocations, demand = plans[1]
    # The waiting pod comes back with its promise ...
    assert [(w.name, w.promise) for w in demand] == [("ns/big", promised.promise)]
    # ... and the released, unbound pod's partition counts as taken, with its limit.
    assert (
        Allocation("ns/small", "uid-small", "n1", ("gpu0-cpx-7",), 20 * GIB, Sharing.SHARED)
        in allocations
    )

    # Bound: its own allocation stands for it, not the hold as well.
    assert controller.schedule("small") == "n1"
    controller.planner.round()
    held = [a for a in plans[2][0] if a.pod_uid == "uid-small"]
    assert held == [
        Allocation("ns/small", "uid-small", "n1", ("gpu0-cpx-7",), 20 * GIB, Sharing.SHARED)
    ]


def test_an_expired_hold_or_one_on_partitions_that_are_gone_is_not_counted(
    plans: list[tuple[list[Allocation], list[Waiting]]],
) -> None:
    kube = FakeKube()
    kube.put_gpunode(gpunode("n1", {0: "CPX"}))
    now = datetime.now(UTC)
    for name, partition, expires in (
        ("expired", "gpu0-cpx-1", now - timedelta(seconds=1)),
        ("gone", "gpu5-cpx-0", now + timedelta(seconds=60)),
        ("standing", "gpu0-cpx-2", now + timedelta(seconds=60)),
    ):
        pod = queued_pod(name)
        pod["spec"]["schedulingGates"] = []
        hold = PlannedPartitions("n1", (partition,), expires)
        pod["metadata"]["annotations"].update(
            {PLANNED_MODE: "CPX", PLANNED_PARTITIONS: planned_partitions.encode(hold)}
        )
        kube.put_pod(pod)
    controller = Controller(kube)
    controller.planner.round()
    allocations, _ = plans[0]
    assert [(a.pod, a.partition_ids) for a in allocations] == [("ns/standing", ("gpu0-cpx-2",))]
    # The queue sets the standing hold's room aside on its partition, the expired pod's
    # wherever the engine would put it, and cannot for the hold on a GPU that is gone.
    decided = controller.queue.round()
    assert decided.unplaced_in_flight == ("ns/gone",)


@pytest.mark.parametrize("order", [("first", "second"), ("second", "first")])
def test_two_pods_admitted_together_each_bind_to_their_own_partitions(
    order: tuple[str, str],
) -> None:
    """The race a mode alone left open: the plan counts "first" on n1's last free CPX
    partition and "second" on idle n2. Released held only to CPX, "second", scheduled first,
    would take n1's partition (binpack scores the fuller node best) and push "first" onto
    n2. Held to their partitions, each lands exactly where the plan counted it, in either
    order."""
    kube = FakeKube()
    kube.put_gpunode(gpunode("n1", {0: "CPX"}))
    kube.put_gpunode(gpunode("n2", {0: "CPX"}))
    for i in range(7):
        kube.put_pod(running_pod(f"run{i}", "n1", f"gpu0-cpx-{i}", 20 * GIB))
    kube.put_pod(queued_pod("first", "20Gi", created="2020-01-01T00:00:00Z"))
    kube.put_pod(queued_pod("second", "20Gi", created="2020-01-01T00:00:01Z"))
    controller = Controller(kube)

    plan = controller.planner.round()
    counted = {a.position: a.promise for a in plan.admitted}
    assert counted == {
        0: Promise("n1", ("gpu0-cpx-7",), CPX),
        1: Promise("n2", ("gpu0-cpx-0",), CPX),
    }
    released = controller.queue.round().released
    assert sorted(p.key for p, _ in released) == ["ns/first", "ns/second"]

    for name in order:
        controller.schedule(name)
    placed = {
        name: (a.node, a.partition_ids)
        for name in ("first", "second")
        if (a := kube.allocation(name)) is not None
    }
    assert placed == {"first": ("n1", ("gpu0-cpx-7",)), "second": ("n2", ("gpu0-cpx-0",))}
    # Both as the plan counted them: the bound pods' annotations say so too.
    for name in ("first", "second"):
        hold = json.loads(kube.pod(name)["metadata"]["annotations"][PLANNED_PARTITIONS])
        assert hold["partitions"] == list(placed[name][1])
