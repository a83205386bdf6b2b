"""The memory-limit monitor on the real control plane: the daemon runs as its own service
account over the emulated MI300X; fake processes with VRAM (amdsmi-emu) belong to a pod
through fake ``<proc-root>/<pid>/cgroup`` files naming the pod's UID, as the kubelet's
cgroups would. Going over the pod's allocation yields an Event on the pod and the metrics,
once per excursion; with ``--memory-limit-action=evict`` the pod is deleted."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hack.devcluster import kube
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.node import Node
from hack.devcluster.procs import free_ports, wait_until

pytestmark = pytest.mark.integration

GIB = 2**30
PARTITION = "gpu0-spx-0"
# Fake pids: amdsmi-emu reports them, and only the test's proc root knows their cgroups.
VLLM, SIDECAR, HOST_TOOL = 4100001, 4100002, 4100003
REASON = "MemoryLimitExceeded"


@dataclass
class Monitored:
    node: Node
    name: str
    proc: Path
    metrics_port: int

    def add_process(self, pid: int, vram: str, *, gpu: int = 0) -> None:
        self.node.emu(
            "ps", "add", "--gpu", str(gpu), "--pid", str(pid), "--name", "vllm", "--vram", vram
        )

    def put_in_pod(self, pid: int, uid: str) -> None:
        """The cgroup a kubelet with the systemd driver gives a container of pod ``uid``."""
        (self.proc / str(pid)).mkdir()
        (self.proc / str(pid) / "cgroup").write_text(
            "0::/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{uid.replace('-', '_')}.slice/cri-containerd-{pid:064x}.scope\n"
        )

    def sample(self, name: str, **labels: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None


@pytest.fixture
def monitored(
    control_plane: ControlPlane, emulator_build: Path, tmp_path: Path
) -> Iterator[Callable[[str], Monitored]]:
    """Starts a daemon with a given --memory-limit-action."""
    started: list[Monitored] = []

    def start(action: str) -> Monitored:
        name = control_plane.node_names[1]
        token = control_plane.service_account_kubeconfig("mipart-system", "mipart-daemon")
        (port,) = free_ports(1)
        proc = tmp_path / "proc"
        proc.mkdir()
        node = Node(emulator_build, tmp_path)
        node.extra_args = [
            *("--kubeconfig", str(token), "--node-name", name, "--heartbeat", "5"),
            *("--metrics-address", f"127.0.0.1:{port}", "--proc-root", str(proc)),
            *("--memory-limit-action", action, "--memory-limit-interval", "1"),
        ]
        node.start()
        started.append(Monitored(node, name, proc, port))
        return started[-1]

    yield start
    for m in started:
        m.node.stop()
        kube.custom_objects(control_plane.api_client()).delete_cluster_custom_object(
            *kube.GPUNODES, m.name
        )


def create_pod(api: Any, namespace: str, node_name: str, name: str = "llm") -> str:
    """A pod bound to ``node_name`` with 10 GiB on gpu0-spx-0, as the extender binds one."""
    allocation = {
        "v": 1,
        "node": node_name,
        "partitions": [PARTITION],
        "memoryBytes": 10 * GIB,
        "sharing": "shared",
    }
    pod = kube.core(api).create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": name,
                "labels": {"app": name},
                "annotations": {"mipart.io/allocation": json.dumps(allocation)},
            },
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "vllm"}]},
        },
    )
    return str(pod.metadata.uid)


def limit_events(api: Any, namespace: str, pod: str) -> list[Any]:
    listing = kube.events(api).list_namespaced_event(
        namespace, field_selector=f"regarding.name={pod},reason={REASON}"
    )
    return list(listing.items)


def test_a_pod_over_its_limit_gets_an_event_and_the_metrics(
    monitored: Callable[[str], Monitored], api: Any, namespace: str
) -> None:
    m = monitored("report")
    uid = create_pod(api, namespace, m.name)
    labels = {"namespace": namespace, "pod": "llm", "partition": PARTITION}
    m.put_in_pod(VLLM, uid)
    m.put_in_pod(SIDECAR, uid)
    # A GPU process in no pod's cgroup: logged, not attributed, and it stops nothing.
    m.add_process(HOST_TOOL, "50G", gpu=1)

    # Under the limit: the usage is measured, nothing is reported.
    m.add_process(VLLM, "8G")
    wait_until(
        "8 GiB measured",
        lambda: m.sample("mipart_pod_memory_used_bytes", **labels) == 8 * GIB,
        timeout=15,
    )
    assert m.sample("mipart_pod_memory_limit_bytes", **labels) == 10 * GIB
    assert m.sample("mipart_memory_limit_exceeded_total", **labels) == 0
    assert limit_events(api, namespace, "llm") == []

    # A second process of the pod on the same partition: 8 + 4 = 12 GiB, over 10 GiB.
    m.add_process(SIDECAR, "4G")
    wait_until("the Event", lambda: limit_events(api, namespace, "llm") != [], timeout=10)
    (event,) = limit_events(api, namespace, "llm")
    assert event.type == "Warning"
    assert (event.regarding.kind, event.regarding.uid) == ("Pod", uid)
    assert f"{PARTITION}: 12Gi used, limit 10Gi (pids {VLLM}, {SIDECAR})" in event.note
    assert m.sample("mipart_pod_memory_used_bytes", **labels) == 12 * GIB
    assert m.sample("mipart_memory_limit_exceeded_total", **labels) == 1

    # Staying over is the same excursion: no second Event, the counter stays at 1.
    time.sleep(3)  # the monitor checks every second
    assert len(limit_events(api, namespace, "llm")) == 1
    assert m.sample("mipart_memory_limit_exceeded_total", **labels) == 1
    assert kube.core(api).read_namespaced_pod("llm", namespace).metadata.deletion_timestamp is None

    # Back under, then over again: a new excursion, a new Event.
    m.node.emu("ps", "rm", "--pid", str(SIDECAR))
    wait_until(
        "back under the limit",
        lambda: m.sample("mipart_pod_memory_used_bytes", **labels) == 8 * GIB,
        timeout=15,
    )
    m.add_process(SIDECAR, "4G")
    wait_until("a second Event", lambda: len(limit_events(api, namespace, "llm")) == 2, timeout=10)
    assert m.sample("mipart_memory_limit_exceeded_total", **labels) == 2

    # The pod gone: its series go too.
    kube.core(api).delete_namespaced_pod("llm", namespace, grace_period_seconds=0)
    wait_until(
        "the pod's series removed",
        lambda: m.sample("mipart_pod_memory_used_bytes", pod="llm") is None,
        timeout=15,
    )
    assert m.sample("mipart_memory_limit_exceeded_total", pod="llm") is None
    unattributed = [
        json.loads(line)
        for line in m.node.log().splitlines()
        if "memory.unattributed_process" in line
    ]
    host = [e for e in unattributed if e["pid"] == HOST_TOOL]
    assert len(host) == 1  # once, not every check
    assert "no readable cgroup" in host[0]["reason"]  # it has no cgroup file at all
    assert m.node.process is not None
    assert m.node.process.poll() is None


def test_with_evict_the_pod_is_deleted_though_a_disruption_budget_protects_it(
    monitored: Callable[[str], Monitored], api: Any, namespace: str
) -> None:
    """A limit is enforced as the kubelet enforces one: a PodDisruptionBudget, which guards a
    service against voluntary disruptions, does not make its pods free to take more."""
    m = monitored("evict")
    uid = create_pod(api, namespace, m.name)
    kube.policy(api).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "llm"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "llm"}}},
        },
    )
    m.put_in_pod(VLLM, uid)
    m.add_process(VLLM, "12G")

    def deleted() -> bool:
        pods = kube.core(api).list_namespaced_pod(namespace).items
        return all(p.metadata.uid != uid or p.metadata.deletion_timestamp for p in pods)

    wait_until("the Event", lambda: limit_events(api, namespace, "llm") != [], timeout=10)
    (event,) = limit_events(api, namespace, "llm")
    assert "evicting the pod" in event.note
    assert f"{PARTITION}: 12Gi used, limit 10Gi (pids {VLLM})" in event.note
    wait_until("the pod deleted", deleted, timeout=15)
    assert "memory.pod_evicted" in m.node.log()
    assert "memory.eviction_refused" not in m.node.log()
    assert len(limit_events(api, namespace, "llm")) == 1


def test_mipart_smi_shows_the_pods_on_each_partition_their_limit_and_usage(
    monitored: Callable[[str], Monitored], api: Any, namespace: str
) -> None:
    """Two pods sharing gpu0-spx-0: one line each, with the limit and what its processes use;
    a process in no pod counts for none."""
    m = monitored("report")
    chat = create_pod(api, namespace, m.name, "chat")
    idle = create_pod(api, namespace, m.name, "idle")
    m.put_in_pod(VLLM, chat)
    m.add_process(VLLM, "8G")
    m.add_process(HOST_TOOL, "3G")  # on gpu0-spx-0 too, in no pod's cgroup

    def entries() -> list[dict[str, Any]]:
        (part,) = m.node.show()["gpus"][0]["partitions"]
        return list(part["allocations"])

    wait_until("both pods listed", lambda: len(entries()) == 2, timeout=15)
    assert entries() == [
        {
            "pod": f"{namespace}/chat",
            "pod_uid": chat,
            "memory_limit_bytes": 10 * GIB,
            "sharing": "shared",
            "memory_used_bytes": 8 * GIB,
        },
        {
            "pod": f"{namespace}/idle",
            "pod_uid": idle,
            "memory_limit_bytes": 10 * GIB,
            "sharing": "shared",
            "memory_used_bytes": 0,
        },
    ]
    rows = [line.split() for line in m.node.smi_ok().splitlines() if line.startswith("0    gpu0")]
    pods = [r[5:] for r in rows if len(r) > 5 and "/" in r[5]]
    assert pods == [
        [f"{namespace}/chat", "10.0", "GiB", "8.0", "GiB"],
        [f"{namespace}/idle", "10.0", "GiB", "0.0", "GiB"],
    ]
    csv_rows = m.node.smi_ok("status", "--gpu", "0", "--csv").splitlines()
    assert [r.split(",")[5] for r in csv_rows[1:]] == [f"{namespace}/chat", f"{namespace}/idle"]
    # GPU 1 holds no pod.
    (gpu1,) = m.node.show()["gpus"][1]["partitions"]
    assert gpu1["allocations"] == []

    kube.core(api).delete_namespaced_pod("idle", namespace, grace_period_seconds=0)
    wait_until("the pod gone from the list", lambda: len(entries()) == 1, timeout=15)
