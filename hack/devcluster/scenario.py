"""The demo's story, shared by hack/demo (which narrates it) and its integration test (which
asserts it): four emulated MI300X nodes in mixed layouts, the sample workloads, a batch fleet
of Llama-70B replicas that wants more SPX GPUs than exist, and a latency pod that arrives
when the cluster is full.

Each step returns what happened, read back from the API server: the demo prints it, the test
checks it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from hack.devcluster import kube
from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.procs import wait_until
from hack.devcluster.stack import Stack
from mipart.cluster.annotations import parse_request
from mipart.cluster.capacity import capacity_of
from mipart.contract.allocation import decode
from mipart.contract.annotations import ALLOCATION, QOS
from mipart.contract.resources import QUEUE_GATE
from mipart.geometry import GPU_MEMORY_BYTES, Rounding, format_bytes
from mipart.placement import Allocation, ClusterView

EXAMPLES = REPO_ROOT / "manifests" / "examples"
SAMPLES = ("vllm-pods.yaml", "mistral-deployment.yaml")
BATCH = EXAMPLES / "llama-70b-batch.yaml"
LATENCY = EXAMPLES / "chat-70b-latency.yaml"
# GPU index -> compute mode per node (others SPX): the layouts a cluster has after an
# operator picked one per node pool by hand.
LAYOUTS: list[dict[int, str]] = [
    {},  # 8 x SPX: room for 70B models
    dict.fromkeys(range(8), "CPX"),  # 64 x 24 GiB
    dict.fromkeys(range(4), "CPX"),  # half CPX, half SPX
    {**dict.fromkeys(range(4), "QPX"), **dict.fromkeys(range(4, 8), "DPX")},
]
# The planner's brakes, short enough for a demo: demand older than a second counts, and a
# GPU that changed may change again after five.
CONTROLLER_ARGS = ("--plan-settle", "1", "--plan-cooldown", "5", "--retry-refused-after", "5")


@dataclass
class Narrator:
    """Where the story is told: hack/demo prints, the test stays quiet."""

    say: Callable[[str], None] = lambda _text: None
    out: Callable[[str], None] = lambda _text: None


@dataclass
class Placed:
    pod: str
    node: str
    partitions: tuple[str, ...]
    memory_bytes: int  # per partition
    qos: str
    waited_s: float  # created -> bound

    @property
    def total_bytes(self) -> int:
        return self.memory_bytes * len(self.partitions)


@dataclass
class Snapshot:
    """The namespace's mipart pods, as the API server has them."""

    placed: dict[str, Placed] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)  # behind the queue gate
    pending: list[str] = field(default_factory=list)  # released, not bound


@dataclass
class Story:
    plane: ControlPlane
    api: Any
    stack: Stack
    namespace: str
    narrator: Narrator = field(default_factory=Narrator)
    repartitions: int = 0
    preempted: list[str] = field(default_factory=list)

    # -- the steps ------------------------------------------------------------------------

    def start(self) -> None:
        self.narrator.say("a mipart daemon per node over 8 emulated MI300X, in mixed layouts")
        for name, layout in zip(self.plane.node_names, LAYOUTS, strict=False):
            self.stack.start_daemon(name, layout)
        self.stack.wait_published(self.api)
        self.kubectl("get", "gpunodes")
        self.narrator.say("the admission webhook, the scheduler extender and mipart-controller")
        self.stack.start_webhook(self.api)
        self.stack.start_extender()
        self.stack.start_controller(*CONTROLLER_ARGS)

    def place_samples(self) -> Snapshot:
        self.narrator.say("(a) the sample workloads: each placed on partitions, with a limit")
        self.apply(*(EXAMPLES / name for name in SAMPLES))
        expected = sum(_replicas(doc) for name in SAMPLES for doc in _docs(EXAMPLES / name))
        wait_until(
            "the samples to be bound",
            lambda: len(self.snapshot().placed) >= expected,
            timeout=120,
        )
        snap = self.snapshot()
        self.print_placements(snap)
        return snap

    def fill_with_batch(self) -> Snapshot:
        self.narrator.say(
            "(b) a batch fleet of Llama-70B replicas, each on a whole SPX GPU: more than exist"
        )
        self.apply(BATCH)
        self.narrator.out(
            "the idle CPX, QPX and DPX GPUs can become SPX; mipart-controller re-partitions "
            "them (GPUNode.spec) and the daemons switch them"
        )
        self.wait_settled("the batch fleet placed and the layouts settled")
        self.repartitions = len(self.repartition_events())
        self.kubectl(
            "get", "events", "-n", "default", "--field-selector", "reason=Repartition",
            "-o", "custom-columns=GPUNODE:.involvedObject.name,WHY:.message",
        )  # fmt: skip
        self.kubectl("get", "gpunodes")
        self.queue()
        return self.snapshot()

    def latency_arrives(self) -> Snapshot:
        self.narrator.say(
            "(c) a latency-class pod when every GPU is taken: it preempts one batch replica,"
            " within the fleet's PodDisruptionBudget"
        )
        before = self.snapshot()
        self.apply(LATENCY)
        wait_until(
            "the latency pod to be bound",
            lambda: "chat-70b" in self.snapshot().placed,
            timeout=120,
        )
        self.preempted = sorted(set(before.placed) - set(self.snapshot().placed))
        self.kubectl(
            "get", "events", "-n", self.namespace, "--field-selector", "reason=Preempted",
            "-o", "custom-columns=POD:.involvedObject.name,WHY:.message",
        )  # fmt: skip
        # The Deployment replaces the evicted replica, and the webhook queues the new one.
        wait_until(
            "the evicted replica's replacement to be queued",
            lambda: bool(set(self.snapshot().queued) - set(before.queued)),
            timeout=60,
        )
        self.narrator.say("(d) the queue, by class, with wait times and reasons")
        self.queue()
        return self.snapshot()

    def show_node(self, node: str) -> None:
        self.narrator.say(f"(e) mipart-smi on {node}: each partition, its pod and its limit")
        daemon = self.stack.daemons[node]
        self.narrator.out(f"$ mipart-smi --socket {daemon.socket}")
        self.narrator.out(daemon.smi_ok())

    def summary(self) -> list[str]:
        submitted = self.pods()
        snap = self.snapshot(submitted)
        gpus = len(self.stack.daemons) * 8
        mipart_bytes = sum(p.total_bytes for p in snap.placed.values())
        whole_pods, whole_bytes = whole_gpu_allocation(submitted, gpus)
        waits = sorted(p.waited_s for p in snap.placed.values())
        latency = [p.waited_s for p in snap.placed.values() if p.qos == "latency"]
        lines = [
            f"GPUs: {gpus} MI300X on {len(self.stack.daemons)} nodes "
            f"({format_bytes(gpus * GPU_MEMORY_BYTES)} of HBM)",
            f"mipart:    {len(snap.placed)} of {len(submitted)} pods placed, "
            f"{format_bytes(mipart_bytes, Rounding.DOWN)} of GPU memory allocated, "
            f"{self.repartitions} re-partitions, {len(self.preempted)} preemption(s); "
            f"{len(snap.queued) + len(snap.pending)} still waiting",
            f"whole GPU: {whole_pods} of {len(submitted)} pods (one per GPU, no "
            f"partitioning), {format_bytes(whole_bytes, Rounding.DOWN)} of GPU memory",
            f"submit to bound: median {statistics.median(waits):.0f} s, max {max(waits):.0f} s"
            + (f"; latency pods {max(latency):.0f} s" if latency else ""),
        ]
        self.narrator.say("(f) summary")
        for line in lines:
            self.narrator.out(line)
        return lines

    # -- reading the cluster --------------------------------------------------------------

    def snapshot(self, pods: list[dict[str, Any]] | None = None) -> Snapshot:
        snap = Snapshot()
        for pod in self.pods() if pods is None else pods:
            meta = pod["metadata"]
            name = meta["name"]
            gates = [g.get("name") for g in pod["spec"].get("schedulingGates") or []]
            text = (meta.get("annotations") or {}).get(ALLOCATION)
            if text and pod["spec"].get("nodeName"):
                allocation = decode(text, pod=name, pod_uid=meta["uid"])
                snap.placed[name] = Placed(
                    name,
                    allocation.node,
                    allocation.partition_ids,
                    allocation.memory_bytes,
                    (meta.get("annotations") or {}).get(QOS, "standard"),
                    _bound_at(pod) - _time(meta["creationTimestamp"]),
                )
            elif QUEUE_GATE in gates:
                snap.queued.append(name)
            else:
                snap.pending.append(name)
        return snap

    def pods(self) -> list[dict[str, Any]]:
        listing = kube.core(self.api).list_namespaced_pod(self.namespace, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(listing.data)["items"]
        # A pod being deleted holds nothing for long: no longer part of the story.
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return sorted(live, key=_creation_order)

    def repartition_events(self) -> list[dict[str, Any]]:
        listing = kube.events(self.api).list_namespaced_event(
            "default", field_selector="reason=Repartition", _preload_content=False
        )
        nodes = set(self.stack.daemons)
        return [
            e
            for e in json.loads(listing.data)["items"]
            if (e.get("regarding") or {}).get("name") in nodes
        ]

    def unplaceable(self) -> list[str]:
        """Waiting pods that the cluster, as it is now, could hold: none, once settled."""
        now = datetime.now(UTC)
        capacities = [capacity_of(g, now=now, stale_after_s=60) for g in self.gpunodes()]
        allocations: list[Allocation] = []
        for pod in kube_pods_everywhere(self.api):
            text = (pod["metadata"].get("annotations") or {}).get(ALLOCATION)
            if text and pod["spec"].get("nodeName"):
                meta = pod["metadata"]
                allocations.append(decode(text, pod=meta["name"], pod_uid=meta["uid"]))
        view = ClusterView(capacities, allocations)
        pods = self.pods()
        snap = self.snapshot(pods)
        fits = []
        for pod in pods:
            if pod["metadata"]["name"] in snap.queued + snap.pending:
                request = parse_request(pod["metadata"].get("annotations") or {})
                if view.evaluate(request).feasible:
                    fits.append(pod["metadata"]["name"])
        return fits

    def wait_settled(self, what: str, quiet_s: float = 8.0, timeout: float = 240) -> None:
        """Until nothing has moved for ``quiet_s``: no bind, no queue change, no GPU mode
        change, and every GPUNode's layout is the one its spec asks for."""
        last: tuple[object, ...] = ()
        since = time.monotonic()

        def settled() -> bool:
            nonlocal last, since
            snap = self.snapshot()
            layouts = self._layouts()
            now = (tuple(sorted(snap.placed)), tuple(snap.queued), layouts)
            if now != last:
                last, since = now, time.monotonic()
                return False
            reached = all(done for _, _, done in layouts)
            return time.monotonic() - since >= quiet_s and reached

        wait_until(what, settled, timeout=timeout, interval=1.0)

    def gpunodes(self) -> list[dict[str, Any]]:
        """The GPUNodes of this story's daemons (the test's cluster may hold others)."""
        items = kube.custom_objects(self.api).list_cluster_custom_object(*kube.GPUNODES)["items"]
        return [g for g in items if g["metadata"]["name"] in self.stack.daemons]

    def _layouts(self) -> tuple[tuple[str, tuple[str, ...], bool], ...]:
        """Per node, the compute modes its daemon published and whether they are the ones its
        spec asks for: one list call, the view the controller has too."""
        layouts = []
        for gpunode in sorted(self.gpunodes(), key=lambda g: str(g["metadata"]["name"])):
            status = (gpunode.get("status") or {}).get("gpus") or []
            have = {g["index"]: g["computePartition"] for g in status}
            want = (gpunode.get("spec") or {}).get("gpus") or []
            reached = all(have.get(g["index"]) == g["computePartition"] for g in want)
            modes = tuple(mode for _, mode in sorted(have.items()))
            layouts.append((str(gpunode["metadata"]["name"]), modes, reached))
        return tuple(layouts)

    # -- what a user types ------------------------------------------------------------------

    def apply(self, *manifests: Any) -> None:
        args = ["apply", "-n", self.namespace]
        for path in manifests:
            args += ["-f", str(path.relative_to(REPO_ROOT))]
        self.kubectl(*args, cwd=True)

    def kubectl(self, *args: str, cwd: bool = False) -> str:
        self.narrator.out(f"$ kubectl {' '.join(args)}")
        result = subprocess.run(
            [self.plane.binaries("kubectl"), f"--kubeconfig={self.plane.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT if cwd else None,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
        self.narrator.out(result.stdout.rstrip())
        return result.stdout

    def queue(self) -> str:
        self.narrator.out(f"$ mipart-queue -n {self.namespace}")
        result = subprocess.run(
            [sys.executable, "-m", "mipart.controller.cli",
             "--kubeconfig", str(self.plane.kubeconfig), "-n", self.namespace],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.narrator.out(result.stdout.rstrip())
        return result.stdout

    def print_placements(self, snap: Snapshot) -> None:
        self.narrator.out(f"{'POD':<30} {'NODE':<10} {'PARTITIONS':<28} {'LIMIT':>8}  {'CLASS':<8}")
        for p in snap.placed.values():
            self.narrator.out(
                f"{p.pod:<30} {p.node:<10} {','.join(p.partitions):<28} "
                f"{format_bytes(p.memory_bytes, Rounding.UP):>8}  {p.qos:<8}"
            )

    def controller_metric(self, prefix: str) -> float:
        with urllib.request.urlopen(self.stack.controller_metrics) as response:
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def whole_gpu_allocation(pods: list[dict[str, Any]], gpus: int) -> tuple[int, int]:
    """What a device plugin that hands out whole GPUs places, in creation order: each pod
    takes as many GPUs as it asks partitions, and no GPU holds two pods."""
    placed = used_bytes = 0
    for pod in pods:
        request = parse_request(pod["metadata"].get("annotations") or {})
        if request.partitions > gpus:
            continue
        gpus -= request.partitions
        placed += 1
        used_bytes += request.memory_bytes * request.partitions
    return placed, used_bytes


def kube_pods_everywhere(api: Any) -> list[dict[str, Any]]:
    listing = kube.core(api).list_pod_for_all_namespaces(_preload_content=False)
    items: list[dict[str, Any]] = json.loads(listing.data)["items"]
    return items


def _docs(path: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _replicas(doc: dict[str, Any]) -> int:
    if doc["kind"] == "Pod":
        return 1
    if doc["kind"] == "Deployment":
        return int(doc["spec"].get("replicas", 1))
    return 0


def _creation_order(pod: dict[str, Any]) -> tuple[str, str]:
    return pod["metadata"]["creationTimestamp"], pod["metadata"]["name"]


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _bound_at(pod: dict[str, Any]) -> float:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            return _time(condition["lastTransitionTime"])
    return time.time()
