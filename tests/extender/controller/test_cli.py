"""mipart-queue: its rows from pod and Event objects (class order, wait, reason), the table
and the JSON lines, its name under kubectl, its errors, and ``| head``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from mipart.contract.resources import CONTROLLER_COMPONENT, EXTENDER_COMPONENT, QUEUE_GATE
from mipart.controller import cli
from mipart.controller.cli import (
    NO_EVENT,
    UNREADABLE,
    build_parser,
    fetch,
    format_wait,
    latest_reasons,
    queue_rows,
    read_objects,
    render_json,
    render_table,
)
from mipart.kube.api import KubeApi, KubeError
from mipart.runtime.terminal import EXIT_BROKEN_PIPE, program_name

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def stamp(seconds_before_now: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_before_now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    qos: str | None = "standard",
    memory: str = "20Gi",
    partitions: int | None = None,
    waited: float = 10,
    gated: bool = True,
    namespace: str = "serving",
    scheduler: str = "mipart-scheduler",
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    annotations = {"mipart.io/memory": memory, "mipart.io/queue": "true", **(extra or {})}
    if qos is not None:
        annotations["mipart.io/qos"] = qos
    if partitions is not None:
        annotations["mipart.io/partitions"] = str(partitions)
    spec: dict[str, Any] = {"schedulerName": scheduler}
    if gated:
        spec["schedulingGates"] = [{"name": "other.io/gate"}, {"name": QUEUE_GATE}]
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": stamp(waited),
            "annotations": annotations,
        },
        "spec": spec,
    }


def event(
    name: str,
    reason: str,
    message: str,
    *,
    ago: float = 5,
    component: str = CONTROLLER_COMPONENT,
    form: str = "core",
) -> dict[str, Any]:
    """An Event on pod ``name`` as core/v1 shows it (what mipart-queue lists), or as
    events.k8s.io/v1 does (what the controller writes)."""
    regarding = {"kind": "Pod", "name": name, "namespace": "serving", "uid": f"uid-{name}"}
    if form == "core":
        return {
            "kind": "Event",
            "involvedObject": regarding,
            "reason": reason,
            "message": message,
            "reportingComponent": component,
            "eventTime": stamp(ago).replace("Z", ".000000Z"),
            "lastTimestamp": None,
        }
    return {
        "kind": "Event",
        "regarding": regarding,
        "reason": reason,
        "note": message,
        "reportingController": component,
        "eventTime": stamp(ago).replace("Z", ".000000Z"),
    }


def test_rows_in_class_order_then_arrival_with_every_field() -> None:
    pods = [
        pod("offline-1", qos="batch", memory="8Gi", waited=183),
        pod("chat", qos="latency", memory="4Gi", waited=2),
        pod("web-old", qos="standard", waited=3600 + 120, partitions=2),
        pod("offline-0", qos="batch", memory="8Gi", waited=200),
        pod("default-class", qos=None, waited=30),
        pod("running", qos="latency", gated=False),
        pod("elsewhere", qos="latency", scheduler="default-scheduler"),
    ]
    events = [
        event(
            "offline-0",
            "Queued",
            "batch queue, position 4 of 4: 2 nodes: no partition with 8Gi free (largest 4Gi)",
        ),
        event("chat", "Queued", "latency queue, position 1 of 1: 1 node: too small", ago=2),
        event("chat", "Preempting", "evicting 1 lower-class pod(s) on n1: serving/x", ago=1),
        event("chat", "Released", "room found", ago=0),  # ignored: not why it waits
        event("web-old", "Queued", "standard queue: waiting for the re-partition planner"),
    ]
    rows = queue_rows(pods, events, now=NOW)
    assert [(r["position"], r["qos"], r["pod"]) for r in rows] == [
        (1, "latency", "serving/chat"),
        (2, "standard", "serving/web-old"),
        (3, "standard", "serving/default-class"),
        (4, "batch", "serving/offline-0"),
        (5, "batch", "serving/offline-1"),
    ]
    chat, web, default, offline0, offline1 = rows
    assert chat == {
        "position": 1,
        "qos": "latency",
        "pod": "serving/chat",
        "inferenceService": None,
        "memoryPerPartition": "4Gi",
        "partitions": 1,
        "waitSeconds": 2,
        "reason": "evicting 1 lower-class pod(s) on n1: serving/x",
    }
    assert web["partitions"] == 2
    assert web["waitSeconds"] == 3720
    assert web["reason"] == "waiting for the re-partition planner"
    # The controller's position in its note is stale: dropped with the class.
    assert offline0["reason"] == "2 nodes: no partition with 8Gi free (largest 4Gi)"
    assert default["reason"] == NO_EVENT
    assert offline1["reason"] == NO_EVENT


def test_namespace_and_scheduler_filters() -> None:
    pods = [pod("a"), pod("b", namespace="other"), pod("c", scheduler="s2")]
    assert [r["pod"] for r in queue_rows(pods, [], now=NOW, namespace="other")] == ["other/b"]
    assert [r["pod"] for r in queue_rows(pods, [], now=NOW, scheduler_name="s2")] == ["serving/c"]


def test_reason_is_the_controllers_latest_event_in_either_api_form() -> None:
    events = [
        event("p", "Queued", "batch queue, position 2 of 9: old", ago=60, form="events"),
        event("p", "PreemptionRefused", "budget refused; looking for other victims", ago=30),
        event("p", "FailedPlacement", "from the extender", ago=1, component=EXTENDER_COMPONENT),
        event("q", "Queued", "standard queue, position 1 of 9: fresh", form="events"),
    ]
    assert latest_reasons(events) == {
        "uid-p": "budget refused; looking for other victims",
        "uid-q": "fresh",
    }


def test_unreadable_events_say_so_for_every_pod() -> None:
    rows = queue_rows([pod("a"), pod("b")], None, now=NOW)
    assert {r["reason"] for r in rows} == {UNREADABLE}


def test_a_pod_whose_annotations_no_longer_parse_is_listed_last_with_why() -> None:
    pods = [pod("bad", qos="batch", memory="lots"), pod("good", qos="batch")]
    rows = queue_rows(pods, [], now=NOW)
    assert [r["pod"] for r in rows] == ["serving/good", "serving/bad"]
    bad = rows[1]
    assert bad["position"] is None
    assert bad["memoryPerPartition"] is None
    assert bad["waitSeconds"] == 10
    assert bad["reason"].startswith("never released: its annotations no longer parse (")
    assert "mipart.io/memory" in bad["reason"]
    assert "- " in render_table(rows)[2]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m0s"),
        (192, "3m12s"),
        (3599, "59m59s"),
        (3600 + 7 * 60 + 30, "1h7m"),
        (86400 * 2 + 3 * 3600 + 59, "2d3h"),
    ],
)
def test_format_wait(seconds: float, text: str) -> None:
    assert format_wait(seconds) == text


def test_table_columns_and_alignment() -> None:
    pods = [
        pod("chat-7f9c", qos="latency", memory="4Gi", waited=0),
        pod("offline-012", qos="batch", memory="8Gi", waited=192),
    ]
    events = [event("offline-012", "Queued", "batch queue, position 2 of 2: no room")]
    pods[0]["metadata"]["labels"] = {"serving.kserve.io/inferenceservice": "chat"}
    lines = render_table(queue_rows(pods, events, now=NOW))
    assert lines[0].split() == [
        "POS", "CLASS", "POD", "SERVICE", "MEMORY", "PARTS", "WAITED", "REASON"
    ]  # fmt: skip
    first = lines[1].split(None, 7)
    second = lines[2].split(None, 7)
    assert first[:7] == ["1", "latency", "serving/chat-7f9c", "chat", "4Gi", "1", "0s"]
    assert first[7] == NO_EVENT
    assert second == ["2", "batch", "serving/offline-012", "-", "8Gi", "1", "3m12s", "no room"]
    # Every column starts where its heading does (the reason, last, too).
    for heading in ("CLASS", "POD", "SERVICE", "REASON"):
        at = lines[0].index(heading)
        assert lines[1][at - 1] == " "
        assert lines[1][at] != " "
    assert render_table([]) == ["the queue is empty"]


def test_json_lines_carry_the_same_fields() -> None:
    kserve = pod("a", qos="batch", waited=75)
    kserve["metadata"]["labels"] = {"serving.kserve.io/inferenceservice": "qwen"}
    rows = queue_rows(
        [kserve],
        [event("a", "Queued", "batch queue, position 1 of 1: no room")],
        now=NOW,
    )
    (line,) = render_json(rows)
    assert json.loads(line) == {
        "position": 1,
        "qos": "batch",
        "pod": "serving/a",
        "inferenceService": "qwen",
        "memoryPerPartition": "20Gi",
        "partitions": 1,
        "waitSeconds": 75,
        "reason": "no room",
    }


def test_read_objects_splits_a_kubectl_list(tmp_path: Path) -> None:
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"kind": "List", "items": [pod("a"), event("a", "Queued", "x")]}))
    pods, events = read_objects(str(listing))
    assert [p["metadata"]["name"] for p in pods] == ["a"]
    assert events is not None
    assert [e["reason"] for e in events] == ["Queued"]
    only_pods = tmp_path / "pods.json"
    only_pods.write_text(json.dumps({"kind": "PodList", "items": [pod("a")]}))
    assert read_objects(str(only_pods))[1] is None
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="no items"):
        read_objects(str(tmp_path / "bad.json"))


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/usr/local/bin/kubectl-mipart-queue", "kubectl mipart queue"),
        ("kubectl-mipart-queue", "kubectl mipart queue"),
        ("/venv/bin/mipart-queue", "mipart-queue"),
        ("/src/extender/mipart/controller/cli.py", "mipart-queue"),
    ],
)
def test_program_name_follows_how_it_was_run(argv0: str, prog: str) -> None:
    assert program_name(argv0, cli.NAME) == prog


def test_help_under_kubectl_says_kubectl_mipart_queue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/kubectl-mipart-queue", "--help"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: kubectl mipart queue ")
    assert build_parser().prog == "mipart-queue"


def test_no_credentials_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["mipart-queue"])
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"mipart-queue: no Kubernetes credentials: $KUBECONFIG not set; "
        f"{tmp_path}/.kube/config: no such file; not in a pod ($KUBERNETES_SERVICE_HOST not set)\n"
    )


def test_watch_and_json_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--watch", "--json"])
    assert exit_.value.code == 2
    assert "--watch prints the table" in capsys.readouterr().err


def test_from_file_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"kind": "List", "items": [pod("a", waited=1)]}))
    assert cli.main(["--from-file", str(listing)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("POS  CLASS")
    assert out[1].split()[:3] == ["1", "standard", "serving/a"]


def test_piping_into_head_prints_no_traceback(tmp_path: Path) -> None:
    """Far more rows than a pipe holds: the writes after head exits fail with EPIPE."""
    listing = tmp_path / "list.json"
    pods = [pod(f"p{n:05}", qos="batch", waited=n) for n in range(4000)]
    listing.write_text(json.dumps({"kind": "List", "items": pods}))
    for mode in ([], ["--json"]):
        writer = subprocess.Popen(
            [sys.executable, "-m", "mipart.controller.cli", "--from-file", str(listing), *mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert writer.stdout is not None
        assert writer.stderr is not None
        head = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True, check=True)
        writer.stdout.close()
        errors = writer.stderr.read().decode()
        writer.stderr.close()
        status = writer.wait(timeout=60)
        assert errors == ""
        assert status == EXIT_BROKEN_PIPE
        assert len(head.stdout.decode().splitlines()) == 1


class FakeApi:
    """Answers the two lists fetch makes; Events refused when ``events`` is None."""

    def __init__(self, pods: list[dict[str, Any]], events: list[dict[str, Any]] | None) -> None:
        self.pods = pods
        self.events = events
        self.calls: list[tuple[str, dict[str, str]]] = []

    def get(self, path: str, **query: str) -> Any:
        self.calls.append((path, query))
        if path.endswith("/pods"):
            return {"items": self.pods}
        if self.events is None:
            raise KubeError(403, "Forbidden", '{"message": "events is forbidden"}')
        return {"items": self.events}


def test_fetch_makes_two_requests_whatever_the_queue(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi([pod(f"p{n}") for n in range(50)], [event("p1", "Queued", "x")])
    pods, events = fetch(cast(KubeApi, api), "serving", "mipart-scheduler")
    assert len(pods) == 50
    assert events == api.events
    assert api.calls == [
        (
            "/api/v1/namespaces/serving/pods",
            {"fieldSelector": "spec.schedulerName=mipart-scheduler"},
        ),
        (
            "/api/v1/namespaces/serving/events",
            {"fieldSelector": f"involvedObject.kind=Pod,reportingComponent={CONTROLLER_COMPONENT}"},
        ),
    ]
    assert capsys.readouterr().err == ""


def test_fetch_without_rights_on_events_still_shows_the_queue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = FakeApi([pod("a")], None)
    pods, events = fetch(cast(KubeApi, api), None, "mipart-scheduler", "kubectl mipart queue")
    assert api.calls[1][0] == "/api/v1/events"
    assert events is None
    assert [r["reason"] for r in queue_rows(pods, events, now=NOW)] == [UNREADABLE]
    assert capsys.readouterr().err == (
        "kubectl mipart queue: cannot list Events, so no reasons: 403 Forbidden: "
        "events is forbidden\n"
    )


def test_watch_prints_the_table_each_interval_until_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"kind": "List", "items": [pod("a")]}))
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    assert cli.main(["--from-file", str(listing), "--watch", "--interval", "0.5"]) == 130
    out = capsys.readouterr().out
    assert naps == [0.5, 0.5]
    assert out.count("POS  CLASS") == 2
    assert out.count("every 0.5s; ") == 2
    assert "\x1b[" not in out  # not a terminal: no redraw codes
