"""Two mipart-controller replicas on the real control plane, each as the controller's own
service account (so the chart's leader-election Role is what lets them work), electing a
leader on the Lease mipart-system/mipart-controller with short timings (lease 4 s, renew
deadline 3 s, retry 1 s).

Exactly one leads. It is given real work: a queued 70B pod that only a re-partitioned GPU can
hold, and 24 queued batch pods to release at 3 pods/s. Once it has re-partitioned that GPU
and released some of the pods, with more still waiting, it is killed with SIGKILL (no chance
to release the Lease); a second 70B pod arrives. The standby takes the Lease within a lease
duration and a retry period of the kill, and finishes the work, and every decision was made
exactly once across the failover: each pod released once, each GPU re-partitioned once, for
one pod each, nothing evicted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from hack.devcluster import kube, queue_scenario
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import Process, free_ports, wait_until
from hack.devcluster.readiness import http_ok
from hack.devcluster.stack import Stack
from mipart.contract.resources import QUEUE_GATE

pytestmark = pytest.mark.integration
GIB = 2**30
# The Lease the chart's Role lets the controller's service account read, create and renew.
LEASE_NAMESPACE, LEASE_NAME = "mipart-system", "mipart-controller"
LEASE_S, RENEW_S, RETRY_S = 4, 3.0, 1.0
# The standby's two requests (read, write) and this test's own polling of the Lease.
MEASURE_SLACK_S = 0.5
SMALL_PODS = 24


def test_the_standby_takes_over_a_killed_leader_and_no_decision_is_made_twice(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    node = control_plane.node_names[0]
    _keep_only_gpunodes(api, {node})
    # GPUs 0-5 CPX and in use, 6 and 7 CPX and idle: each 70B pod needs one of the idle ones
    # made SPX; the small pods fit beside the pods on GPUs 0-5 as they are.
    stack.start_daemon(node, dict.fromkeys(range(8), "CPX"))
    core = kube.core(api)
    for gpu in range(6):
        held = kube.bound_pod(f"held-{gpu}", node, [f"gpu{gpu}-cpx-0"], 10 * GIB,
                              scheduler_name="mipart-scheduler")  # fmt: skip
        core.create_namespaced_pod(namespace, held)
    stack.wait_published(api)
    stack.start_webhook(api)
    stack.start_extender()
    _delete_lease(api)  # whatever an earlier test left: the first candidate creates it
    recorder = _Recorder(api, namespace)
    recorder.start()
    controllers: dict[str, _Controller] = {}
    try:
        for name in ("ctl-a", "ctl-b"):
            controllers[name] = _Controller.start(stack, control_plane, name)

        # Exactly one leads: it holds the Lease and says so in its metric; the other stands by.
        wait_until("one controller to hold the Lease", lambda: _holder(api) in controllers,
                   timeout=60)  # fmt: skip
        leader = controllers[_holder(api)]
        (standby,) = (c for c in controllers.values() if c is not leader)
        wait_until("the leader's metric", lambda: leader.leading() == 1.0, timeout=10)
        assert standby.leading() == 0.0
        first = _lease(api)["spec"]
        assert first["leaseDurationSeconds"] == LEASE_S
        assert first["leaseTransitions"] == 0

        # Work for the leader: a 70B pod to re-partition a GPU for, then (once the planner
        # runs, so that the queue releases what it admits, beside the pods on GPUs 0-5)
        # small pods to release.
        core.create_namespaced_pod(namespace, _big("llama-a", node))
        wait_until("the leader to re-partition a GPU", lambda: bool(recorder.changes(node)),
                   timeout=30, process=leader.process)  # fmt: skip
        for i in range(SMALL_PODS):
            pod = queue_scenario.queued_pod(f"small-{i:02d}", "batch", "4Gi")
            core.create_namespaced_pod(namespace, pod)
        small = {f"small-{i:02d}" for i in range(SMALL_PODS)}

        def mid_work() -> bool:
            released = recorder.released().keys() & small
            return 4 <= len(released) <= SMALL_PODS - 6

        wait_until("the leader to release some of the small pods", mid_work, timeout=30,
                   process=leader.process)  # fmt: skip
        (changed_by_leader,) = recorder.changes(node)
        assert not standby.acted(), "the standby acted while the leader held the Lease"

        os.kill(leader.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until("the standby to hold the Lease", lambda: _holder(api) == standby.name,
                   timeout=LEASE_S + RETRY_S + 30, interval=0.05)  # fmt: skip
        took = time.monotonic() - killed
        # The standby counts the lease duration from the last renewal it saw, which it saw at
        # most one retry period after the leader made it (before the kill), and tries once per
        # retry period: it holds the Lease at most a lease duration and a retry period after.
        print(
            f"failover: {standby.name} held the Lease {took:.2f} s after {leader.name} was "
            f"killed (lease {LEASE_S} s, renew deadline {RENEW_S:g} s, retry {RETRY_S:g} s)"
        )
        assert took <= LEASE_S + RETRY_S + MEASURE_SLACK_S, f"took {took:.2f} s"
        taken = _lease(api)["spec"]
        assert taken["leaseTransitions"] == 1
        assert taken["acquireTime"] != first["acquireTime"]
        wait_until("the new leader's metric", lambda: standby.leading() == 1.0, timeout=10)
        took_over = time.monotonic()

        # New demand that only the new leader can serve, beside what the old one left.
        core.create_namespaced_pod(namespace, _big("llama-b", node))

        def done() -> bool:
            bound = _bound(api, namespace)
            return recorder.released().keys() >= small and {"llama-a", "llama-b"} | small <= bound

        wait_until("every pod released and bound", done, timeout=120, process=standby.process)

        # The killed replica comes back (as Kubernetes restarts it) and stands by. A clean
        # stop of the leader (SIGTERM) hands over at once: the leader ends its rounds and gives
        # the Lease up, and the standby takes it at its next try.
        again = controllers["again"] = _Controller.start(stack, control_plane, leader.name, run=2)
        wait_until("the restarted replica to run for the Lease", again.candidate, timeout=30,
                   process=again.process)  # fmt: skip
        assert again.leading() == 0.0
        os.kill(standby.process.pid, signal.SIGTERM)
        stopped = time.monotonic()
        wait_until("the restarted replica to hold the Lease", lambda: _holder(api) == again.name,
                   timeout=30, interval=0.05)  # fmt: skip
        handover = time.monotonic() - stopped
        print(f"handover: {again.name} held the Lease {handover:.2f} s after {standby.name} "
              "was stopped")  # fmt: skip
        # At most: the round running at SIGTERM ends (a second, here), the Lease is released,
        # and the standby tries once per retry period.
        assert handover <= 1.0 + RETRY_S + MEASURE_SLACK_S, f"took {handover:.2f} s"
        assert _lease(api)["spec"]["leaseTransitions"] == 2
        wait_until(f"{standby.name} to exit", lambda: not standby.process.alive(), timeout=20)
        assert '"leader.released"' in standby.log()
    finally:
        for controller in controllers.values():
            controller.process.stop()  # SIGTERM: the survivor gives the Lease up
        recorder.stop()

    # Each GPU changed once: the one the old leader chose for llama-a, and the other, by the
    # new leader, for llama-b.
    changes = recorder.changes(node)
    assert len(changes) == 2, changes
    assert changes[0] == changed_by_leader
    assert {gpu for gpu, _ in changes} == {6, 7}
    assert all(mode == "SPX" for _, mode in changes)
    notes = [e["note"] for e in _events(api, "default", "Repartition")
             if e["regarding"]["name"] == node and f"{namespace}/" in e["note"]]  # fmt: skip
    for big in ("llama-a", "llama-b"):
        assert sum(f"{namespace}/{big}" in n for n in notes) <= 1, notes
    assert sum(f"{namespace}/llama-b" in n for n in notes) == 1, notes

    # Each pod released once: at most one Released Event each. A pod the old leader released
    # in its last moments may have lost its Event with the process (Events are sent from a
    # queue); only such a pod, released before the new leader took over, may lack one.
    released_events = _events(api, namespace, "Released")
    by_pod: dict[str, list[str]] = defaultdict(list)
    for event in released_events:
        by_pod[event["regarding"]["name"]].append(event["reportingInstance"])
    assert all(len(instances) == 1 for instances in by_pod.values()), dict(by_pod)
    for name in small | {"llama-a", "llama-b"}:
        if name not in by_pod:
            assert recorder.released()[name] < took_over, f"{name} released, without an Event"
    reporters = {instances[0] for instances in by_pod.values()}
    assert reporters == {leader.name, standby.name}, "both leaders should have released pods"
    assert by_pod["llama-b"] == [standby.name]
    # Nothing evicted (no preemption or defragmentation was needed), so none twice.
    for reason in ("Preempted", "Defragmented"):
        assert _events(api, namespace, reason) == []
    assert '"controller.lost_leadership"' not in standby.log()


def test_a_leader_paused_past_its_lease_wakes_up_fenced_and_exits(
    stack: Stack, api: Any, control_plane: ControlPlane
) -> None:
    """A leader that is frozen (SIGSTOP: a stalled VM, a long pause) while the standby takes
    over must not act when it wakes: its writes are refused since its renew deadline, and it
    exits (code 3) to come back as a standby."""
    _delete_lease(api)
    controllers: dict[str, _Controller] = {}
    try:
        for name in ("ctl-p", "ctl-q"):
            controllers[name] = _Controller.start(stack, control_plane, name)
        wait_until("one controller to hold the Lease", lambda: _holder(api) in controllers,
                   timeout=60)  # fmt: skip
        leader = controllers[_holder(api)]
        (standby,) = (c for c in controllers.values() if c is not leader)
        wait_until("the leader's metric", lambda: leader.leading() == 1.0, timeout=10)
        os.kill(leader.process.pid, signal.SIGSTOP)
        wait_until("the standby to hold the Lease", lambda: _holder(api) == standby.name,
                   timeout=LEASE_S + RETRY_S + 30, interval=0.05)  # fmt: skip
        os.kill(leader.process.pid, signal.SIGCONT)
        wait_until(f"{leader.name} to exit", lambda: not leader.process.alive(), timeout=15)
        lost = [json.loads(line) for line in leader.log().splitlines()
                if '"controller.lost_leadership"' in line]  # fmt: skip
        assert [entry["exit_code"] for entry in lost] == [3]
        assert _holder(api) == standby.name
        assert standby.process.alive()
    finally:
        for controller in controllers.values():
            if controller.process.alive():
                os.kill(controller.process.pid, signal.SIGCONT)
            controller.process.stop()


class _Controller:
    """One mipart-controller replica, as the controller's service account, with its own
    POD_NAME and metrics port."""

    def __init__(self, name: str, process: Process, metrics: str) -> None:
        self.name = name
        self.process = process
        self.metrics = metrics

    @classmethod
    def start(cls, stack: Stack, plane: ControlPlane, name: str, run: int = 1) -> _Controller:
        token = plane.service_account_kubeconfig("mipart-system", "mipart-controller")
        (port,) = free_ports(1)
        argv = [
            "env", f"POD_NAME={name}",
            sys.executable, "-m", "mipart.controller.main",
            "--kubeconfig", str(token),
            "--metrics-address", f"127.0.0.1:{port}",
            "--log-format", "json",
            "--stale-after", "30",
            "--release-rate", "3", "--release-burst", "3",
            "--plan-settle", "1", "--plan-cooldown", "5",
            "--leader-elect", "on",
            "--leader-elect-lease", f"{LEASE_NAMESPACE}/{LEASE_NAME}",
            "--leader-elect-lease-duration", str(LEASE_S),
            "--leader-elect-renew-deadline", str(RENEW_S),
            "--leader-elect-retry-period", str(RETRY_S),
        ]  # fmt: skip
        log = stack.workdir / f"{name}.{run}.log"
        process = Process.start(f"{name} (run {run})", argv, log, detach=False)
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_until(f"{name} to serve metrics", lambda: http_ok(metrics), timeout=60,
                   process=process)  # fmt: skip
        return cls(name, process, metrics)

    def leading(self) -> float | None:
        with urllib.request.urlopen(self.metrics, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("mipart_controller_leader "):
                    return float(line.split()[1])
        return None

    def log(self) -> str:
        return Path(self.process.log).read_text()

    def acted(self) -> bool:
        return '"controller.serving"' in self.log()

    def candidate(self) -> bool:
        return '"leader.candidate"' in self.log()


class _Recorder:
    """Watches, as the API server reports them in order: when each pod of the namespace was
    first seen without the queue gate, and every change of each GPU's mode in GPUNode.spec."""

    def __init__(self, api: Any, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._released: dict[str, float] = {}
        self._spec: dict[tuple[str, int], str | None] = {}  # (node, gpu) -> mode, as last seen
        self._changes: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
        self._threads = [
            threading.Thread(target=self._follow, args=(self._pods,), daemon=True),
            threading.Thread(target=self._follow, args=(self._gpunodes,), daemon=True),
        ]

    def start(self) -> None:
        # The GPUNodes as they are now, so that only later changes count.
        for item in kube.custom_objects(self._api).list_cluster_custom_object(*kube.GPUNODES)[
            "items"
        ]:
            self._gpunode(item, initial=True)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def released(self) -> dict[str, float]:
        with self._lock:
            return dict(self._released)

    def changes(self, node: str) -> list[tuple[int, str | None]]:
        with self._lock:
            return list(self._changes[node])

    def _follow(self, step: Any) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                version = step(version)
            except client.ApiException as err:
                if err.status == 410:
                    version = None  # expired: start again from a fresh list
                else:
                    time.sleep(0.2)
            except Exception:  # a dropped connection: go on from where it was
                time.sleep(0.2)

    def _pods(self, version: str | None) -> str | None:
        stream = _new_watch()
        core = kube.core(self._api)
        kwargs = {"resource_version": version} if version else {}
        for event in stream.stream(core.list_namespaced_pod, self._namespace,
                                   timeout_seconds=2, **kwargs):  # fmt: skip
            pod = event["object"]
            gates = [g.name for g in pod.spec.scheduling_gates or []]
            if event["type"] != "DELETED" and QUEUE_GATE not in gates:
                with self._lock:
                    self._released.setdefault(pod.metadata.name, time.monotonic())
        return str(stream.resource_version) if stream.resource_version else version

    def _gpunodes(self, version: str | None) -> str | None:
        stream = _new_watch()
        objects = kube.custom_objects(self._api)
        kwargs = {"resource_version": version} if version else {}
        for event in stream.stream(objects.list_cluster_custom_object, *kube.GPUNODES,
                                   timeout_seconds=2, **kwargs):  # fmt: skip
            if event["type"] != "DELETED":
                self._gpunode(event["object"])
        return str(stream.resource_version) if stream.resource_version else version

    def _gpunode(self, obj: dict[str, Any], *, initial: bool = False) -> None:
        name = obj["metadata"]["name"]
        modes = {int(g["index"]): g.get("computePartition")
                 for g in (obj.get("spec") or {}).get("gpus", [])}  # fmt: skip
        with self._lock:
            known = {gpu for (n, gpu) in self._spec if n == name}
            for gpu in sorted(known | set(modes)):
                mode = modes.get(gpu)
                before = self._spec.get((name, gpu))
                if not initial and mode != before:
                    self._changes[name].append((gpu, mode))
                self._spec[(name, gpu)] = mode


def _new_watch() -> Any:
    new: Any = watch.Watch  # the client's watch is untyped
    return new()


def _big(name: str, node: str) -> dict[str, Any]:
    return queue_scenario.queued_model_pod(
        name, "standard", "meta-llama/Llama-3.1-70B-Instruct", node
    )


def _keep_only_gpunodes(api: Any, keep: set[str]) -> None:
    # GPUNodes that earlier tests' daemons left stay ready for a while, and their room would
    # change what the planner decides here.
    objects = kube.custom_objects(api)
    for item in objects.list_cluster_custom_object(*kube.GPUNODES)["items"]:
        if item["metadata"]["name"] not in keep:
            objects.delete_cluster_custom_object(*kube.GPUNODES, item["metadata"]["name"])


def _lease(api: Any) -> dict[str, Any]:
    response = kube.coordination(api).read_namespaced_lease(
        LEASE_NAME, LEASE_NAMESPACE, _preload_content=False
    )
    lease: dict[str, Any] = json.loads(response.data)
    return lease


def _holder(api: Any) -> str:
    try:
        return str(_lease(api)["spec"].get("holderIdentity") or "")
    except client.ApiException as err:
        if err.status == 404:
            return ""
        raise


def _delete_lease(api: Any) -> None:
    try:
        kube.coordination(api).delete_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
    except client.ApiException as err:
        if err.status != 404:
            raise


def _bound(api: Any, namespace: str) -> set[str]:
    return {
        p.metadata.name
        for p in kube.core(api).list_namespaced_pod(namespace).items
        if p.spec.node_name and not p.metadata.deletion_timestamp
    }


def _events(api: Any, namespace: str, reason: str) -> list[dict[str, Any]]:
    # Raw JSON: the client's Event model rejects Events other controllers write (no eventTime).
    listing = kube.events(api).list_namespaced_event(
        namespace, field_selector=f"reason={reason}", _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(listing.data)["items"]
    return items
