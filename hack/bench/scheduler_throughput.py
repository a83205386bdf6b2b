#!/usr/bin/env python3
"""Pods per second of mipart's kube-scheduler with and without the extender, on one cluster.

The cluster is the test harness's real control plane (hack/devcluster/controlplane.py, state in
.run/bench-cluster): etcd, kube-apiserver, the controller manager, kwok playing the kubelets
of N fake MI300X nodes, and kube-scheduler run with the chart's scheduler configuration.
The extender runs as its own process, as hack/devcluster/stack.py starts it, under the
scheduler's service account. There are no daemons: this script writes each node's GPUNode
(a mixed layout, Ready, its heartbeat refreshed every HEARTBEAT_S seconds) as a daemon would.
There is no webhook either: the pods are created as it would leave them.

Both kinds of run create the same M pods (schedulerName mipart-scheduler, mipart.io/memory
annotations) from several threads at once, and a watch notes when each is bound:

- "with extender": the container requests mipart.io/partition, so the scheduler calls the
  extender's filter, prioritize and bind for every pod;
- "without": the same pods without that resource, so the scheduler never calls it (the
  extender keeps running and watching, as a sidecar would).

Each kind runs in two modes. "stream" times from the first create to the last pod bound, so
pod creation is part of it (on 2 cores the scheduler keeps up with the creates without the
extender). "backlog" first parks all M pods (a node selector no node matches yet), then
labels every node and times from there to the last pod bound: the scheduler alone, with a
queue. Runs alternate (without, with, with, without, ...) so that drift in the machine
favours neither, and the pods are deleted between runs. Prints each run, the ratio of the
means, and the CPU each process spent per pod (every component shares the machine's CPUs).
Figures only: nothing here passes or fails (hack/bench/README.md).

Then the same runs again with hack/bench/reference-extender in the extender's place: the same
protocol (filter, prioritize, bind with an annotated Binding) and the same watches (pods and
GPUNodes), no placement at all, in Go with client-go. Its ratio is what an extender of this
design keeps on this machine whatever it decides, so the two ratios side by side tell what
the protocol costs from what mipart's extender costs. It is built with Go on first use and
cached; --no-reference skips it.

The scheduler's own API client is rate-limited (clientConnection qps/burst; the manifest
leaves kube-scheduler's defaults, 50/100). Without the extender the scheduler POSTs every
Binding itself, so that limit, not scheduling, caps the run at 50 pods/s after the first 100;
with the extender the Bindings are the extender's and escape it. To compare scheduling with
scheduling, the benchmark raises the limit (CLIENT_QPS) in its copy of the manifest; nothing
else in the configuration changes. --manifest-client-limits keeps the manifest as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from mipart.geometry import NodeLayout, partitions_of
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.informer import Informer
from mipart.runtime.logs import configure as configure_logging

# This file runs as a script; the test harness and the shared helpers are found from the
# repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hack.bench import fleet
from hack.bench.report import machine, print_table
from hack.devcluster.binaries import REPO_ROOT, cache_dir
from hack.devcluster.controlplane import ControlPlane, print_progress
from hack.devcluster.procs import Process, wait_until
from hack.devcluster.stack import mipart_extender_argv, start_extender_process
from mipart.contract.annotations import MEMORY
from mipart.contract.resources import GPUNODE_API_VERSION, GPUNODES, PARTITION_RESOURCE

STATE_DIR = REPO_ROOT / ".run" / "bench-cluster"
NAMESPACE = "bench"
SCHEDULER_NAME = "mipart-scheduler"
GI = 2**30
# The daemons' heartbeat in the tests' stack is 5 s and the extender's staleness limit
# (EXTENDER_STALE_AFTER_S) 30 s; 10 s keeps every node Ready with a third of the API writes.
HEARTBEAT_S = 10.0
# Sizes that fit every layout's partitions somewhere, so every pod binds.
MEMORY_SIZES = ("8Gi", "16Gi", "20Gi", "40Gi")
WITH, WITHOUT = "with extender", "without"
# The scheduler's API client limits for the benchmark: far above what 2 cores can use, so the
# client's token bucket never decides the result.
CLIENT_QPS = 1000


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- GPUNodes, as the daemons would publish them -----------------------------------------


def gpunode_status(node_layout: NodeLayout) -> dict[str, Any]:
    """The status a daemon writes (daemon/mipart/agent/gpunode/status.py) for a healthy node."""
    now = now_rfc3339()
    gpus: list[dict[str, Any]] = []
    total = partitions = 0
    for index, mode in sorted(node_layout.compute.items()):
        geometry = partitions_of(index, mode, node_layout.memory)
        total += sum(p.memory_bytes for p in geometry)
        partitions += len(geometry)
        gpus.append(
            {
                "index": index,
                "computePartition": mode.value,
                "memoryPartition": node_layout.memory.value,
                "health": "Healthy",
                "phase": "Ready",
                "drained": False,
                "partitions": [
                    {
                        "id": p.id,
                        "computeUnits": p.compute_units,
                        "memoryBytes": p.memory_bytes,
                        "xcds": list(p.xcds),
                        "memoryPool": int(p.memory_pool.rsplit("pool", 1)[1]),
                    }
                    for p in geometry
                ],
            }
        )
    return {
        "observedGeneration": 1,
        "heartbeatTime": now,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "DaemonReady",
                "message": f"{len(gpus)} GPUs read through amdsmi",
                "lastTransitionTime": now,
            }
        ],
        "memoryPartition": node_layout.memory.value,
        "gpuCount": len(gpus),
        "partitionCount": partitions,
        "freeMemory": f"{total // GI}Gi",
        "gpus": gpus,
    }


def publish_gpunodes(api: KubeApi, names: list[str]) -> None:
    for index, name in enumerate(names):
        api.post(
            GPUNODES,
            {
                "apiVersion": GPUNODE_API_VERSION,
                "kind": "GPUNode",
                "metadata": {"name": name},
                "spec": {},
            },
        )
        # Status is a subresource: the create ignores it, a write to /status sets it.
        api.merge_patch(
            f"{GPUNODES}/{name}/status", {"status": gpunode_status(fleet.layout(index))}
        )


class Heartbeat:
    """Refreshes every GPUNode's heartbeatTime, as each node's daemon would, so that the
    extender keeps the nodes Ready through the whole benchmark."""

    def __init__(self, api: KubeApi, names: list[str]) -> None:
        self._api = api
        self._names = names
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            beat = {"status": {"heartbeatTime": now_rfc3339()}}
            for name in self._names:
                try:
                    self._api.merge_patch(f"{GPUNODES}/{name}/status", beat)
                except (KubeError, OSError) as err:
                    print(f"heartbeat of {name} failed: {err}", file=sys.stderr)


def lift_client_limits(config: dict[str, Any]) -> None:
    """The chart's scheduler configuration with one change: the API client's rate limit."""
    config["clientConnection"].update(qps=CLIENT_QPS, burst=CLIENT_QPS)


# --- the extender --------------------------------------------------------------------------


def start_extender(plane: ControlPlane) -> Process:
    """As hack/devcluster/stack.py starts it: the scheduler's service account, on the port the
    scheduler's configuration names, following the scheduler's leader lease."""
    token = plane.service_account_kubeconfig("mipart-system", "mipart-scheduler")
    return start_extender_process(
        plane,
        "mipart-extender",
        mipart_extender_argv(plane, token),
        plane.log_dir / "mipart-extender.log",
    )


REFERENCE_SOURCE = REPO_ROOT / "hack" / "bench" / "reference-extender"
MIPART, REFERENCE = "mipart", "reference"


def build_reference_extender() -> Path:
    """The reference extender's binary, built once per version of its sources into the same
    cache as the Kubernetes binaries."""
    sources = sorted(REFERENCE_SOURCE.glob("go.*")) + sorted(REFERENCE_SOURCE.glob("*.go"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in sources)).hexdigest()[:16]
    binary = cache_dir() / "bench" / f"reference-extender-{digest}"
    if not binary.exists():
        print_progress(f"building the reference extender into {binary}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath -buildvcs=false"}
        subprocess.run(
            ["go", "build", "-o", str(binary), "."], cwd=REFERENCE_SOURCE, env=env, check=True
        )
    return binary


def start_reference_extender(plane: ControlPlane, binary: Path) -> Process:
    """As start_extender, with the reference extender in its place."""
    token = plane.service_account_kubeconfig("mipart-system", "mipart-scheduler")
    argv = [
        str(binary),
        *plane.extender.extender_flags(),
        "--kubeconfig",
        str(token),
        "--scheduler-name",
        SCHEDULER_NAME,
    ]
    return start_extender_process(
        plane, "reference-extender", argv, plane.log_dir / "reference-extender.log"
    )


def extender_allocations(plane: ControlPlane) -> int:
    url = plane.extender.status_url("/debug/allocations")
    with urllib.request.urlopen(url, timeout=10) as reply:
        return len(orjson.loads(reply.read()))


def bind_conflicts(plane: ControlPlane) -> int:
    """Binds the extender refused because the room filter saw was taken by then (the
    scheduler retries those pods after a back-off)."""
    url = plane.extender.status_url("/metrics")
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mipart_extender_bind_conflicts_total"
    )


# --- pods ----------------------------------------------------------------------------------


def pod(name: str, index: int, *, with_extender: bool, gated: bool) -> dict[str, Any]:
    """A vLLM pod as the webhook leaves it. The partition resource is what makes the
    scheduler consult the extender (managedResources); the "without" pods lack only that.
    A gated pod fits only nodes labelled OPEN_LABEL (see BACKLOG)."""
    resources: dict[str, str] = {"cpu": "1", "memory": "2Gi"}
    if with_extender:
        resources[PARTITION_RESOURCE] = "1"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "bench"},
            "annotations": {MEMORY: MEMORY_SIZES[index % len(MEMORY_SIZES)]},
        },
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "terminationGracePeriodSeconds": 0,
            **({"nodeSelector": {OPEN_LABEL: "true"}} if gated else {}),
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.9.1",
                    "resources": {"requests": dict(resources), "limits": dict(resources)},
                }
            ],
        },
    }


class PodWatch:
    """When each pod of the current run was first seen attempted (PodScheduled False) and
    bound (spec.nodeName), from one watch on the namespace for the whole benchmark (a watch
    per run would outlive its run)."""

    def __init__(self, api: KubeApi) -> None:
        self._changed = threading.Condition()
        self._prefix = ""
        self.attempted: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.informer = Informer(
            api, f"/api/v1/namespaces/{NAMESPACE}/pods", name="bench-pods", handler=self._on_pod
        )

    def start(self) -> None:
        self.informer.start()
        self.informer.wait_synced(60)

    def stop(self) -> None:
        self.informer.stop()

    def expect(self, prefix: str) -> None:
        """Track the pods whose names start with ``prefix`` from now on."""
        with self._changed:
            self._prefix, self.attempted, self.bound = prefix, {}, {}

    def wait(self, seen: dict[str, float], count: int, timeout: float) -> dict[str, float]:
        """A copy of ``seen`` (attempted or bound) once it has ``count`` pods or at timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(seen) < count and time.monotonic() < deadline:
                self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            return dict(seen)

    def _on_pod(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        at = time.monotonic()
        if new is None:
            return
        name = new["metadata"]["name"]
        conditions = (new.get("status") or {}).get("conditions") or []
        unschedulable = any(
            c.get("type") == "PodScheduled" and c.get("status") == "False" for c in conditions
        )
        with self._changed:
            if not name.startswith(self._prefix):
                return
            if new["spec"].get("nodeName") and name not in self.bound:
                self.bound[name] = at
                self._changed.notify_all()
            elif unschedulable and name not in self.attempted:
                self.attempted[name] = at
                self._changed.notify_all()


@dataclass(frozen=True)
class Run:
    extender: str  # whose extender served (MIPART or REFERENCE), called or not
    mode: str
    kind: str
    pods: int
    bound: int
    create_s: float  # first create sent to the last create answered
    seconds: float  # from the start (see STREAM and BACKLOG) to the last pod seen bound
    conflicts: int  # binds the extender refused (see bind_conflicts)
    cpu: dict[str, float]  # CPU seconds each process used over the same interval

    @property
    def pods_per_s(self) -> float:
        return self.bound / self.seconds if self.seconds else 0.0


# Pods created as fast as possible into a running scheduler; timed from the first create.
STREAM = "stream"
# Pods created with a node selector that no node matches (the scheduler tries each once and
# parks it), then every node labelled at once; timed from the labelling, so pod creation is not
# timed. A label rather than a cordon: uncordoning also waits for the node lifecycle controller
# to lift its unschedulable taint, and pods that try in between back off for 2 s more.
BACKLOG = "backlog"
OPEN_LABEL = "bench.mipart.io/open"
# kube-scheduler's back-off after one failed attempt is 1 s (podInitialBackoffSeconds).
BACKOFF_S = 1.5


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process (all its threads) has used so far."""
    # The fields after the parenthesised command name, which may hold spaces; utime and
    # stime are the 14th and 15th of the line.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Bench:
    """The running cluster, and one run of M pods at a time on it."""

    def __init__(
        self,
        plane: ControlPlane,
        api: KubeApi,
        watch: PodWatch,
        extender: Process,
        extender_name: str,
        threads: int,
    ) -> None:
        self.plane = plane
        self.api = api
        self.watch = watch
        self.extender = extender
        self.extender_name = extender_name
        self.threads = threads
        # Every process that shares the CPUs: where a run's time goes.
        self.processes = {
            **(plane.info.pids if plane.info else {}),
            "extender": extender.pid,
            "benchmark": os.getpid(),
        }

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.processes.items()}

    def run(self, label: str, count: int, *, mode: str, with_extender: bool) -> Run:
        prefix = f"{label}-"
        bodies = [
            pod(f"{prefix}{i:04d}", i, with_extender=with_extender, gated=mode == BACKLOG)
            for i in range(count)
        ]
        timeout = max(120.0, count * 0.5)
        self.watch.expect(prefix)
        conflicts = bind_conflicts(self.plane)
        path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        cpu_before = self.cpu()
        created_at = time.monotonic()
        self.parallel(lambda body: self.api.post(path, body), bodies)
        create_s = time.monotonic() - created_at
        started = created_at
        if mode == BACKLOG:
            attempted = self.watch.wait(self.watch.attempted, count, timeout)
            if len(attempted) < count:
                raise RuntimeError(f"{label}: only {len(attempted)}/{count} pods were attempted")
            time.sleep(BACKOFF_S)  # every pod's back-off is over: none waits for it
            cpu_before = self.cpu()
            started = time.monotonic()
            self.set_nodes_open(True)
        bound = self.watch.wait(self.watch.bound, count, timeout)
        cpu_after = self.cpu()
        last = max(bound.values(), default=time.monotonic())
        run = Run(
            extender=self.extender_name,
            mode=mode,
            kind=WITH if with_extender else WITHOUT,
            pods=count,
            bound=len(bound),
            create_s=create_s,
            seconds=last - started,
            conflicts=bind_conflicts(self.plane) - conflicts,
            cpu={name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        )
        self.delete_pods()
        if mode == BACKLOG:
            self.set_nodes_open(False)
        return run

    def set_nodes_open(self, is_open: bool) -> None:
        # A merge patch's null deletes the label.
        body = {"metadata": {"labels": {OPEN_LABEL: "true" if is_open else None}}}
        self.parallel(
            lambda name: self.api.merge_patch(f"/api/v1/nodes/{name}", body),
            self.plane.node_names,
        )

    def parallel(self, action: Callable[[Any], Any], items: list[Any]) -> None:
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="bench") as pool:
            for _ in pool.map(action, items):
                pass

    def delete_pods(self) -> None:
        """Delete every pod at once (no grace: kwok runs no containers) and wait until the API
        and the extender's view have none left, so the next run starts from an empty cluster."""
        path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        self.api.request("DELETE", path, query={"gracePeriodSeconds": "0"})
        wait_until("the pods to be gone", lambda: not self.api.get(path, limit="1")["items"], 120)
        wait_until(
            "the extender to release every allocation",
            lambda: extender_allocations(self.plane) == 0,
            timeout=60,
            process=self.extender,
        )


def create_namespace(api: KubeApi) -> None:
    api.post("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    # Pods are refused until the service-account controller has made `default`.
    wait_until(
        f"service account default in {NAMESPACE}",
        lambda: bool(api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default")),
        timeout=60,
    )


# --- the benchmark -------------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> list[Run]:
    # Built before the cluster starts: a first build takes a minute of the machine's CPUs.
    reference = None if args.no_reference else build_reference_extender()
    # Plain HTTP between scheduler and extender: the reference extender speaks no TLS, and
    # both extenders are measured over the same kind of connection.
    plane = ControlPlane(
        STATE_DIR,
        scheduler_config=None if args.manifest_client_limits else lift_client_limits,
        extender_tls=False,
    )
    extender: Process | None = None
    heartbeat: Heartbeat | None = None
    watch: PodWatch | None = None
    try:
        print_progress(f"starting a control plane with {args.nodes} kwok nodes in {STATE_DIR}")
        plane.start(nodes=args.nodes, progress=print_progress)
        api = KubeApi.connect(plane.kubeconfig)
        print_progress("publishing GPUNodes")
        publish_gpunodes(api, plane.node_names)
        heartbeat = Heartbeat(api, plane.node_names)
        heartbeat.start()
        create_namespace(api)
        watch = PodWatch(api)
        watch.start()
        runs: list[Run] = []
        starters: list[tuple[str, Callable[[], Process]]] = [
            (MIPART, lambda: start_extender(plane))
        ]
        if reference is not None:
            starters.append((REFERENCE, lambda: start_reference_extender(plane, reference)))
        for name, start in starters:
            print_progress(f"starting the {name} extender")
            extender = start()
            bench = Bench(plane, api, watch, extender, name, args.threads)
            runs += timed_runs(bench, args)
            extender.stop()
            extender = None
        return runs
    finally:
        print_progress("tearing down")
        if watch is not None:
            watch.stop()
        if heartbeat is not None:
            heartbeat.stop()
        if extender is not None:
            extender.stop()
        plane.stop(keep_logs=True)


def timed_runs(bench: Bench, args: argparse.Namespace) -> list[Run]:
    """Warm-up, then each mode's runs, with and without the extender alternating."""
    # Untimed: the first pods pay for connections, caches and lazy start-up in every
    # component; no timed run should.
    print_progress("warm-up")
    for with_extender in (False, True):
        warm = bench.run("warmup", args.warmup, mode=STREAM, with_extender=with_extender)
        if warm.bound < warm.pods:
            raise RuntimeError(f"warm-up: {warm.bound}/{warm.pods} pods bound ({warm.kind})")
    runs: list[Run] = []
    # without, with, with, without, ...: each kind runs as often first as second.
    order = [i % 4 in (1, 2) for i in range(2 * args.rounds)]
    for mode in (STREAM, BACKLOG):
        for number, with_extender in enumerate(order, 1):
            kind = WITH if with_extender else WITHOUT
            print_progress(
                f"{bench.extender_name}: {mode} run {number}/{len(order)}: {args.pods} pods, {kind}"
            )
            runs.append(
                bench.run(f"{mode}{number}", args.pods, mode=mode, with_extender=with_extender)
            )
    return runs


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_report(args: argparse.Namespace, runs: list[Run]) -> None:
    print(f"scheduler throughput: {machine()}")
    limits = (
        "the manifest's (kube-scheduler defaults, 50 qps / 100 burst)"
        if args.manifest_client_limits
        else f"raised to {CLIENT_QPS} qps / {CLIENT_QPS} burst"
    )
    print(
        f"{args.nodes} kwok nodes (8 MI300X each, mixed layouts), {args.pods} pods a run created "
        f"by {args.threads} threads;\nthe whole control plane shares these CPUs; scheduler API "
        f"client limits: {limits}"
    )
    print()
    print(
        "stream: pods created as fast as possible; seconds = first create sent to last pod "
        "bound\nbacklog: pods created while no node matched them; seconds = nodes labelled to "
        "last pod bound"
    )
    print()
    print(
        f"extender: {MIPART} = mipart's; {REFERENCE} = hack/bench/reference-extender (same "
        "protocol and watches, no placement)"
    )
    print()
    print_table(
        [
            "extender",
            "mode",
            "run",
            "kind",
            "pods",
            "bound",
            "create s",
            "seconds",
            "pods/s",
            "bind conflicts",
        ],
        [row(i, r) for i, r in enumerate(runs, 1)],
    )
    print()
    summary = []
    for extender, mode, selected in phases(runs):
        with_rate = mean([r.pods_per_s for r in selected if r.kind == WITH])
        without_rate = mean([r.pods_per_s for r in selected if r.kind == WITHOUT])
        ratio = with_rate / without_rate if without_rate else float("nan")
        # The target is mipart's; the reference's ratio is what it is measured against.
        verdict = ("met" if ratio >= 0.7 else "MISSED") if extender == MIPART else ""
        summary.append((extender, mode, with_rate, without_rate, round(ratio, 2), verdict))
    print_table(
        [
            "extender",
            "mode",
            "with pods/s",
            "without pods/s",
            "ratio with/without",
            "target >= 0.70",
        ],
        summary,
    )
    if any(r.bound < r.pods for r in runs):
        print("note: some runs timed out before every pod was bound; their rate counts the bound")
    print()
    print_cpu(runs)


def row(number: int, r: Run) -> tuple[object, ...]:
    return (
        *(r.extender, r.mode, number, r.kind, r.pods, r.bound),
        *(r.create_s, r.seconds, r.pods_per_s, r.conflicts),
    )


def phases(runs: list[Run]) -> list[tuple[str, str, list[Run]]]:
    """(extender, mode, its runs) in the order they ran."""
    keys = dict.fromkeys((r.extender, r.mode) for r in runs)
    return [(e, m, [r for r in runs if (r.extender, r.mode) == (e, m)]) for e, m in keys]


def print_cpu(runs: list[Run]) -> None:
    """CPU milliseconds per pod bound, by process, over the timed interval: where the time
    goes on a machine whose CPUs every component shares."""
    cpus = os.cpu_count() or 1
    processes = sorted({name for r in runs for name in r.cpu})

    def per_pod(selected: list[Run], cost: Callable[[Run], float]) -> float:
        return mean([1000 * cost(r) / max(1, r.bound) for r in selected])

    rows: list[tuple[object, ...]] = []
    for extender, mode, selected in phases(runs):
        without = [r for r in selected if r.kind == WITHOUT]
        with_ = [r for r in selected if r.kind == WITH]
        costs: list[tuple[str, Callable[[Run], float]]] = [
            *((name, lambda r, n=name: r.cpu.get(n, 0.0)) for name in processes),
            ("all processes", lambda r: sum(r.cpu.values())),
            # What the machine had to give: wall time times its CPUs.
            (f"(wall x {cpus} CPUs)", lambda r: cpus * r.seconds),
        ]
        for name, cost in costs:
            a, b = per_pod(without, cost), per_pod(with_, cost)
            rows.append((extender, mode, name, a, b, b - a))
    print("CPU ms per pod bound over the timed interval, mean of the runs of each kind:")
    print_table(["extender", "mode", "process", "without", "with extender", "difference"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--nodes", type=int, help="kwok nodes (default 50; quick: 10)")
    parser.add_argument("--pods", type=int, help="pods a run (default 500; quick: 60)")
    parser.add_argument(
        "--rounds", type=int, help="runs of each kind per mode, alternating (default 4; quick: 1)"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads creating pods")
    parser.add_argument(
        "--manifest-client-limits",
        action="store_true",
        help="keep the manifest's scheduler API client limits (see the module docstring)",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the runs with the reference extender (see the module docstring)",
    )
    args = parser.parse_args(argv)
    # The benchmark's watch logs a traceback when the API server goes away at teardown;
    # what matters here is reported in the tables.
    configure_logging("console", "critical")
    args.nodes = args.nodes or (10 if args.quick else 50)
    args.pods = args.pods or (60 if args.quick else 500)
    args.rounds = args.rounds or (1 if args.quick else 4)
    args.warmup = 10 if args.quick else 30
    try:
        runs = benchmark(args)
    except KeyboardInterrupt:
        print("interrupted; the cluster is down", file=sys.stderr)
        return 130
    print_report(args, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
