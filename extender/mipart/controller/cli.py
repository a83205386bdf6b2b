"""``mipart-queue`` (``kubectl mipart queue``): the QoS queue as mipart-controller sees it,
read from the API server.

The queue is the pods behind the ``mipart.io/queue`` gate, so any client that can list pods
can show it; the order is the controller's own (mipart.queue.order). Why each pod waits is
the last Event mipart-controller posted on it (``Queued``, ``Preempting``, ...): one list of
Events for the whole queue, not a request per pod.

Everything between reading the objects and printing is a pure function of pod and Event
dicts (``queue_rows``, ``render_table``, ``render_json``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from mipart.cluster.annotations import AnnotationError, parse_request
from mipart.contract.kserve import INFERENCESERVICE_LABEL
from mipart.contract.resources import CONTROLLER_COMPONENT
from mipart.controller.pods import is_gated, qos_of, queued_pod
from mipart.geometry import Rounding, format_bytes
from mipart.kube.api import KubeApi, KubeError
from mipart.kube.kubeconfig import CredentialsError
from mipart.queue import order
from mipart.runtime.terminal import program_name, run_quietly

NAME = "mipart-queue"
DEFAULT_SCHEDULER = "mipart-scheduler"
# The exit status of a command whose reader went away (128 + SIGPIPE), as the shell reports
# kubectl's or cat's in `... | head`.
# What the controller's Queued note starts with ("batch queue, position 12 of 300: "): the
# position it had then, long stale; the table says the class and today's position.
_QUEUED_PREFIX = re.compile(r"^(latency|standard|batch) queue(, position \d+ of \d+)?: ")
NO_EVENT = (
    "no Event from mipart-controller yet (not running, not caught up, "
    "or the Event expired on the API server)"
)
UNREADABLE = "unknown: no Events were read (listing them was refused, or the input has none)"
# SERVICE: the KServe InferenceService a pod belongs to ("-" for a plain pod).
COLUMNS = ("POS", "CLASS", "POD", "SERVICE", "MEMORY", "PARTS", "WAITED", "REASON")
_RIGHT = {"POS", "MEMORY", "PARTS", "WAITED"}

EPILOG = """credentials, as kubectl finds them: --kubeconfig, else $KUBECONFIG (its files
merged as kubectl merges them), else ~/.kube/config, else the pod's service account.

exit status: 0 ok, 1 the API server refused or was unreachable, 2 bad usage or no
credentials, 141 the reader went away (| head)
"""

Row = dict[str, Any]
# Pods, and Events (None: none could be read).
Objects = tuple[list[dict[str, Any]], list[dict[str, Any]] | None]


def build_parser(prog: str = NAME) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Show the pods waiting in mipart's QoS queue, in the order they will go,\n"
        "with how long each has waited and why.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: where kubectl looks)")
    p.add_argument("--context", help="the kubeconfig context to use (default: its current one)")
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    p.add_argument("--scheduler-name", default=DEFAULT_SCHEDULER)
    p.add_argument("--json", action="store_true", help="one JSON object per pod, in order")
    p.add_argument(
        "-w", "--watch", action="store_true", help="print the table again every --interval"
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between --watch tables (2)")
    p.add_argument(
        "--from-file",
        metavar="FILE",
        help="read pods and Events from FILE ('-': stdin) instead of the API server, as "
        "`kubectl get pods,events -A -o json` writes them",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    prog = program_name(sys.argv[0], NAME)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.watch and args.json:
        parser.error("--watch prints the table; scripts poll --json")
    if args.interval <= 0:
        parser.error("--interval must be above 0")
    if args.watch and args.from_file == "-":
        parser.error("--watch cannot read stdin again")
    return run_quietly(lambda: _run(args, prog, sys.stdout))


def _run(args: argparse.Namespace, prog: str, out: TextIO) -> int:
    source: Callable[[], Objects]
    if args.from_file is not None:
        failed = f"{prog}: {args.from_file}"
        source = partial(read_objects, args.from_file)
    else:
        try:
            api = KubeApi.connect_like_kubectl(args.kubeconfig, args.context)
        except CredentialsError as err:
            print(f"{prog}: {err}", file=sys.stderr)
            return 2
        failed = f"{prog}: cannot list pods"
        source = partial(fetch, api, args.namespace, args.scheduler_name, prog)
    first = True
    while True:
        try:
            pods, events = source()
        except (KubeError, OSError, ValueError) as err:
            print(f"{failed}: {err}", file=sys.stderr)
            if not args.watch:
                return 1
        else:
            rows = queue_rows(
                pods,
                events,
                now=time.time(),
                namespace=args.namespace,
                scheduler_name=args.scheduler_name,
            )
            lines = render_json(rows) if args.json else render_table(rows)
            if args.watch:
                lines = _watch_frame(lines, first, out.isatty(), args.interval)
            _write(out, lines)
        if not args.watch:
            return 0
        first = False
        time.sleep(args.interval)


def fetch(api: KubeApi, namespace: str | None, scheduler_name: str, prog: str = NAME) -> Objects:
    """The pods for the scheduler, and mipart-controller's Events on pods (None when they
    cannot be listed: RBAC; that costs the reasons only): two requests, however long the
    queue."""
    scope = f"/api/v1/namespaces/{namespace}" if namespace else "/api/v1"
    pods = api.get(f"{scope}/pods", fieldSelector=f"spec.schedulerName={scheduler_name}")
    try:
        # core/v1 names the events.k8s.io field reportingController reportingComponent.
        events = api.get(
            f"{scope}/events",
            fieldSelector=f"involvedObject.kind=Pod,reportingComponent={CONTROLLER_COMPONENT}",
        )
    except (KubeError, OSError) as err:
        print(f"{prog}: cannot list Events, so no reasons: {err}", file=sys.stderr)
        return pods["items"], None
    return pods["items"], events["items"]


def read_objects(source: str) -> Objects:
    """Pods and Events from a JSON List (``kubectl get pods,events -o json``) or a PodList
    (then no Events: None); ``-`` reads stdin."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    document = json.loads(text)
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ValueError("not a Kubernetes list (no items)")
    pods: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("kind") == "Event" or "involvedObject" in item or "regarding" in item:
            events.append(item)
        elif item.get("kind", "Pod") == "Pod":
            pods.append(item)
    return pods, events or None


def queue_rows(
    pods: Iterable[dict[str, Any]],
    events: Iterable[dict[str, Any]] | None,
    *,
    now: float,
    namespace: str | None = None,
    scheduler_name: str = DEFAULT_SCHEDULER,
) -> list[Row]:
    """One row per gated pod, in the controller's order (class, then arrival), then those
    whose annotations no longer parse (the controller skips them: they wait for ever).
    ``events`` None: they could not be read, and no pod's reason is known."""
    chosen = [
        p
        for p in pods
        if is_gated(p)
        and (namespace is None or p["metadata"].get("namespace") == namespace)
        and (p.get("spec") or {}).get("schedulerName") == scheduler_name
    ]
    reasons = latest_reasons(events or ())
    no_reason = NO_EVENT if events is not None else UNREADABLE
    by_uid = {p["metadata"]["uid"]: p for p in chosen}
    queued = order(q for p in chosen if (q := queued_pod(p)) is not None)
    rows: list[Row] = [
        {
            "position": n,
            "qos": q.qos.value,
            "pod": q.key,
            "inferenceService": _service_of(by_uid[q.uid]),
            "memoryPerPartition": format_bytes(q.request.memory_bytes, Rounding.UP),
            "partitions": q.request.partitions,
            "waitSeconds": max(0, int(now - q.created)),
            "reason": reasons.get(q.uid, no_reason),
        }
        for n, q in enumerate(queued, start=1)
    ]
    listed = {q.uid for q in queued}
    for uid, pod in by_uid.items():
        if uid not in listed:
            meta = pod["metadata"]
            rows.append(
                {
                    "position": None,
                    "qos": qos_of(pod).value,
                    "pod": f"{meta.get('namespace')}/{meta.get('name')}",
                    "inferenceService": _service_of(pod),
                    "memoryPerPartition": None,
                    "partitions": None,
                    "waitSeconds": max(0, int(now - _timestamp(meta.get("creationTimestamp")))),
                    "reason": f"never released: {_annotation_problem(pod)}",
                }
            )
    return rows


def latest_reasons(events: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Pod UID -> the note of mipart-controller's latest Event on it (its Queued prefix
    dropped), Released excepted. Takes core/v1 and events.k8s.io/v1 Events."""
    latest: dict[str, tuple[float, str]] = {}
    for event in events:
        component = event.get("reportingComponent") or event.get("reportingController")
        reason = event.get("reason")
        if component != CONTROLLER_COMPONENT or reason == "Released":
            continue
        regarding = event.get("involvedObject") or event.get("regarding") or {}
        uid = regarding.get("uid")
        if not uid:
            continue
        note = str(event.get("message") or event.get("note") or reason or "")
        if reason == "Queued":
            note = _QUEUED_PREFIX.sub("", note, count=1)
        when = _event_time(event)
        if uid not in latest or when >= latest[uid][0]:
            latest[uid] = (when, note)
    return {uid: note for uid, (_, note) in latest.items()}


def render_table(rows: Sequence[Row]) -> list[str]:
    if not rows:
        return ["the queue is empty"]
    cells = [
        (
            "-" if r["position"] is None else str(r["position"]),
            r["qos"],
            r["pod"],
            r["inferenceService"] or "-",
            r["memoryPerPartition"] or "-",
            "-" if r["partitions"] is None else str(r["partitions"]),
            format_wait(r["waitSeconds"]),
            r["reason"],
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS) - 1)]

    def line(values: Sequence[str]) -> str:
        fields = [
            v.rjust(w) if name in _RIGHT else v.ljust(w)
            for name, v, w in zip(COLUMNS, values, widths, strict=False)
        ]
        return "  ".join([*fields, values[-1]]).rstrip()

    return [line(COLUMNS), *(line(c) for c in cells)]


def render_json(rows: Sequence[Row]) -> list[str]:
    return [json.dumps(r) for r in rows]


def format_wait(seconds: float) -> str:
    """42s, 3m12s, 5h7m, 2d3h: to the second under an hour, then coarser, as kubectl's ages."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _watch_frame(lines: list[str], first: bool, tty: bool, interval: float) -> list[str]:
    stamp = f"every {interval:g}s; {datetime.now().strftime('%H:%M:%S')}"
    if tty:  # redraw in place, as watch(1) does
        return ["\x1b[H\x1b[2J" + stamp, "", *lines]
    return [*([] if first else [""]), stamp, *lines]


def _write(out: TextIO, lines: Iterable[str]) -> None:
    for text in lines:
        out.write(text + "\n")
    out.flush()


def _service_of(pod: dict[str, Any]) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    name = labels.get(INFERENCESERVICE_LABEL)
    return str(name) if name else None


def _annotation_problem(pod: dict[str, Any]) -> str:
    try:
        parse_request((pod["metadata"].get("annotations")) or {})
    except AnnotationError as err:
        return f"its annotations no longer parse ({err})"
    return "its annotations no longer parse"


def _event_time(event: dict[str, Any]) -> float:
    series = event.get("series") or {}
    for stamp in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("deprecatedLastTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if stamp:
            return _timestamp(stamp)
    return 0.0


def _timestamp(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
