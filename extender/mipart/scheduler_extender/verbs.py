"""The four extender verbs, in the k8s.io/kube-scheduler/extender/v1 wire format.

The format has no JSON tags, so keys are Go's field names: "Pod", "NodeNames", "FailedNodes",
"Host", "Score" (docs/facts-kubernetes.md#extender-wire-format). With nodeCacheCapable the
scheduler sends node names only and expects names back; "NodeNames" is always a list in our
answers, since null would filter out every node without a reason.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import structlog

from mipart.cluster.annotations import AnnotationError, ParsedPod, RequestCache, qos_of
from mipart.cluster.holds import HELD, Waivers, filter_held, held_allocation, held_reason
from mipart.cluster.http import BadRequest
from mipart.cluster.view import ClusterState
from mipart.contract.allocation import encode
from mipart.contract.annotations import ALLOCATION
from mipart.contract.planned_partitions import PlannedPartitions
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.informer import object_key
from mipart.placement import (
    QOS_RANK,
    Allocation,
    ClusterView,
    PartitionRequest,
    PlacementConflict,
    QosClass,
    allocation_for,
    summarize_rejections,
    victims_for,
)
from mipart.scheduler_extender.metrics import ExtenderMetrics

log = structlog.get_logger(__name__)


@dataclass
class Verbs:
    cluster: ClusterState
    api: KubeApi
    metrics: ExtenderMetrics
    # Whether this extender may answer now (cache warm, its scheduler holds the lease).
    serving: Callable[[], str | None]
    # Called with (pod, message) when a pod fits nowhere, to tell the user why.
    report_unschedulable: Callable[[dict[str, Any], str], None] = lambda _pod, _msg: None
    requests: RequestCache = field(default_factory=RequestCache)
    # The wall clock a hold's expiry is judged by (a test's own clock in tests).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Holds filter let go because kube-scheduler ruled the held node out.
    waivers: Waivers = field(default_factory=Waivers)

    # -- filter ---------------------------------------------------------------------------

    def filter(self, body: Any) -> dict[str, Any]:
        started = time.perf_counter()
        pod, names = _args(body)
        refusal = self.serving()
        if refusal is not None:
            return _filter_error(refusal)
        try:
            parsed = self.requests.parsed_of(pod, lambda: _annotations(pod))
        except AnnotationError as err:
            # The webhook refuses these at admission; without it, say so on every node.
            reason = f"bad annotations: {err}"
            return _filter_result([], {}, dict.fromkeys(names, reason))
        request, hold = parsed.request, parsed.hold_at(self.clock())
        if hold is not None and hold.node not in names:
            # kube-scheduler's own filters ruled the held node out: the hold cannot be kept,
            # and waiting for it to expire would only delay the pod (Waivers).
            # The planned mode goes with it: the partitions the plan counted are out of reach,
            # and the pod may find room in any mode now rather than back off for minutes.
            self.waivers.waive(str(pod["metadata"].get("uid")), hold)
            log.info("hold.waived", pod=object_key(pod), hold=hold.describe())
            hold, request = None, parsed.without_plan()
        if hold is None:
            result = self.cluster.locked(lambda view: view.filter(request, names))
        else:
            # Held by the planner: its partitions or nothing, until the hold expires.
            allocation = _held(parsed, hold, pod)
            result = self.cluster.locked(lambda view: filter_held(view, hold, allocation, names))
        # Once per distinct reason, not per node: at 5000 nodes a label lookup and an inc per
        # rejected node was half of filter's time (hack/bench/extender_latency.py).
        by_kind: Counter[str] = Counter()
        for reasons in (result.rejected, result.unresolvable):
            for reason, nodes in Counter(reasons.values()).items():
                by_kind[HELD if hold is not None else _reason_kind(reason)] += nodes
        for kind, nodes in by_kind.items():
            self.metrics.rejections.labels(kind).inc(nodes)
        if not result.feasible and names:
            self.report_unschedulable(pod, summarize_rejections(result.reasons()))
        self.metrics.latency.labels("filter").observe(time.perf_counter() - started)
        return _filter_result(list(result.feasible), result.rejected, result.unresolvable)

    # -- prioritize -----------------------------------------------------------------------

    def prioritize(self, body: Any) -> list[dict[str, Any]]:
        started = time.perf_counter()
        pod, names = _args(body)
        if self.serving() is not None:
            return [{"Host": n, "Score": 0} for n in names]
        try:
            parsed = self.requests.parsed_of(pod, lambda: _annotations(pod))
        except AnnotationError:
            return [{"Host": n, "Score": 0} for n in names]
        request, hold = parsed.request, parsed.hold_at(self.clock())
        if hold is not None and hold.node not in names:
            # Waived by filter: the scheduler ruled the held node out; so is the planned mode.
            hold, request = None, parsed.without_plan()
        if hold is None:
            scores = self.cluster.locked(lambda view: view.scores(request, names))
        else:
            # As filter: the held node, if its partitions would be accepted, and no other.
            allocation = _held(parsed, hold, pod)
            feasible = self.cluster.locked(
                lambda view: filter_held(view, hold, allocation, names).feasible
            )
            scores = dict.fromkeys(feasible, _BEST_SCORE)
        answer = [{"Host": n, "Score": scores.get(n, 0)} for n in names]
        self.metrics.latency.labels("prioritize").observe(time.perf_counter() - started)
        return answer

    # -- bind -----------------------------------------------------------------------------

    def bind(self, body: Any) -> dict[str, str]:
        started = time.perf_counter()
        if not isinstance(body, dict):
            raise BadRequest("ExtenderBindingArgs must be an object")
        try:
            name, namespace, uid, node = (
                str(body[k]) for k in ("PodName", "PodNamespace", "PodUID", "Node")
            )
        except KeyError as err:
            raise BadRequest(f"ExtenderBindingArgs: missing {err.args[0]}") from None
        refusal = self.serving()
        if refusal is not None:
            return {"Error": refusal}
        pod = self.cluster.pods.get(f"{namespace}/{name}")
        if pod is None or (pod.get("spec") or {}).get("schedulingGates"):
            # Not seen yet, or seen before its release: a pod the scheduler binds has no gates,
            # and the release wrote the planned mode and hold that bind must honour.
            pod = self._read_pod(namespace, name)
        if pod is None or pod["metadata"].get("uid") != uid:
            return {"Error": f"pod {namespace}/{name} with uid {uid} not found"}
        try:
            parsed = self.requests.parsed_of(pod, lambda: _annotations(pod))
        except AnnotationError as err:
            return {"Error": f"pod {namespace}/{name}: {err}"}
        hold = parsed.hold_at(self.clock())
        request = parsed.request
        if hold is not None and node != hold.node:
            if not self.waivers.waived(uid, hold):
                self.metrics.bind_conflicts.inc()
                return {"Error": f"pod {namespace}/{name} is {held_reason(hold)}, not on {node}"}
            # Filter let it go, the scheduler having ruled the held node out: its planned
            # mode went with it.
            hold, request = None, parsed.without_plan()
        try:
            if hold is None:
                allocation = self.cluster.locked(lambda view: _reserve(view, request, node, pod))
            else:
                # Exactly the held partitions, under the same lock and rules as any bind.
                held = _held(parsed, hold, pod)
                allocation = self.cluster.locked(lambda view: _reserve_held(view, held))
        except PlacementConflict as err:
            # The cluster changed since filter (another bind won the room): the scheduler
            # retries the pod, which is right.
            self.metrics.bind_conflicts.inc()
            return {"Error": f"pod {namespace}/{name} no longer fits on {node}: {err}"}
        error = self._post_binding(namespace, name, uid, node, allocation)
        if error is not None:
            self.cluster.locked(lambda view: view.remove_allocation(uid))
            return {"Error": error}
        log.info(
            "pod.bound",
            pod=f"{namespace}/{name}",
            node=node,
            partitions=list(allocation.partition_ids),
            memory=allocation.memory_bytes,
        )
        self.metrics.latency.labels("bind").observe(time.perf_counter() - started)
        return {"Error": ""}

    def _post_binding(
        self, namespace: str, name: str, uid: str, node: str, allocation: Allocation
    ) -> str | None:
        """POST the Binding: the API server sets nodeName and copies our annotation onto the
        pod in one update, so no one ever sees the pod on a node without its allocation."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,  # a precondition: a recreated pod of the same name is refused
                "annotations": {ALLOCATION: encode(allocation)},
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            self.api.post(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", binding)
        except KubeError as err:
            return f"binding {namespace}/{name} to {node}: {err}"
        except OSError as err:
            return f"binding {namespace}/{name} to {node}: {err}"
        return None

    def _read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod: dict[str, Any] = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        except KubeError:
            return None
        return pod

    # -- preempt --------------------------------------------------------------------------

    def preempt(self, body: Any) -> dict[str, Any]:
        """Keep, per node, only the fewest victims (of those the scheduler proposes) whose
        eviction lets the pod fit; drop nodes where evicting them would not help."""
        pod = _pod_of(body, "ExtenderPreemptionArgs")
        proposals = body.get("NodeNameToMetaVictims")
        if proposals is None:
            proposals = {}
        if not isinstance(proposals, dict):
            raise BadRequest("ExtenderPreemptionArgs: 'NodeNameToMetaVictims' must be an object")
        try:
            parsed = self.requests.parsed_of(pod, lambda: _annotations(pod))
        except AnnotationError:
            return {"NodeNameToMetaVictims": {}}
        hold = parsed.hold_at(self.clock())
        uid = str(pod["metadata"].get("uid"))
        if hold is not None and not self.waivers.waived(uid, hold):
            # Held to partitions its filter checks: no eviction makes room anywhere else.
            return {"NodeNameToMetaVictims": {}}
        request = parsed.request
        # Lower classes only: kube-scheduler proposes pods of lower *priority*, and pods that
        # did not queue carry no class priority; the queue's preemption makes the same cut.
        classes = {
            str(p["metadata"].get("uid")): qos_of(p["metadata"].get("annotations") or {})
            for p in self.cluster.pods.items()
        }
        answer = self.cluster.locked(lambda view: _victims(view, request, proposals, classes))
        return {"NodeNameToMetaVictims": answer}


def _reserve(
    view: ClusterView, request: PartitionRequest, node: str, pod: dict[str, Any]
) -> Allocation:
    placement = view.place(request, node)
    allocation = allocation_for(
        placement, request, pod=object_key(pod), pod_uid=str(pod["metadata"]["uid"])
    )
    view.reserve(allocation)
    return allocation


def _held(parsed: ParsedPod, hold: PlannedPartitions, pod: dict[str, Any]) -> Allocation:
    return held_allocation(
        hold, parsed.request, pod=object_key(pod), pod_uid=str(pod["metadata"].get("uid"))
    )


def _reserve_held(view: ClusterView, allocation: Allocation) -> Allocation:
    view.reserve(allocation)
    return allocation


def _victims(
    view: ClusterView,
    request: PartitionRequest,
    proposals: dict[str, Any],
    classes: dict[str, QosClass],
) -> dict[str, Any]:
    rank = QOS_RANK[request.qos]
    answer: dict[str, Any] = {}
    for node, proposal in proposals.items():
        if not isinstance(proposal, dict):
            continue
        uids = {str(p.get("UID")) for p in proposal.get("Pods") or [] if isinstance(p, dict)}
        capacity = view.capacity(node)
        if capacity is None:
            continue
        on_node = view.allocations(node)
        candidates = [
            a
            for a in on_node
            if a.pod_uid in uids and QOS_RANK[classes.get(a.pod_uid, QosClass.STANDARD)] > rank
        ]
        chosen = victims_for(request, capacity, on_node, candidates)
        if chosen is None:
            continue
        answer[node] = {
            "Pods": [{"UID": a.pod_uid} for a in chosen],
            "NumPDBViolations": proposal.get("NumPDBViolations", 0),
        }
    return answer


def _pod_of(body: Any, kind: str) -> dict[str, Any]:
    """The pod an extender call of ``kind`` is about; BadRequest naming the field if the body
    or its pod is not object-shaped."""
    if not isinstance(body, dict):
        raise BadRequest(f"{kind} must be an object")
    pod = body.get("Pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise BadRequest(f"{kind}: 'Pod' must be a pod object with metadata")
    return pod


def _args(body: Any) -> tuple[dict[str, Any], list[str]]:
    pod = _pod_of(body, "ExtenderArgs")
    names = body.get("NodeNames")
    if names is None:
        raise BadRequest(
            "ExtenderArgs: 'NodeNames' is null; configure the extender with nodeCacheCapable: true"
        )
    if not isinstance(names, list) or not _all_strings(names):
        raise BadRequest("ExtenderArgs: 'NodeNames' must be a list of node names")
    return pod, names


def _all_strings(values: list[Any]) -> bool:
    # str.join refuses anything but strings: 5000 names checked in C in ~40 us, where a
    # type check per name costs ~155 us even through map().
    try:
        "".join(values)
    except TypeError:
        return False
    return True


def _annotations(pod: dict[str, Any]) -> dict[str, str]:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadRequest("Pod.metadata.annotations must be an object")
    return {str(k): str(v) for k, v in annotations.items()}


def _filter_result(
    feasible: list[str], failed: dict[str, str], unresolvable: dict[str, str]
) -> dict[str, Any]:
    return {
        "NodeNames": feasible,
        "FailedNodes": failed,
        "FailedAndUnresolvableNodes": unresolvable,
        "Error": "",
    }


def _filter_error(message: str) -> dict[str, Any]:
    return {"NodeNames": [], "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": message}


# What prioritize gives the one node a held pod may go to.
_BEST_SCORE = 10
_AMOUNT = re.compile(r"\d+(?:\.\d+)?(?:[KMGT]i)?")


@lru_cache(maxsize=4096)
def _reason_kind(reason: str) -> str:
    """A bounded label for metrics: the reason with its amounts and details taken out."""
    return _AMOUNT.sub("N", reason.split(" (", 1)[0])[:80]
