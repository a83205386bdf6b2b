"""mipart-smi against a real daemon over the emulated MI300X: --json and --csv on every
command, before or after it; --gpu by index, BDF, UUID or all; no pods without Kubernetes;
and a reader that goes away (``| head -1``) ends it quietly."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

import pytest

from hack.devcluster.node import Node
from mipart.smi.render import EVENT_CSV, GPU_CSV, NODE_CSV

BROKEN_PIPE = 141  # what mipart-smi exits with when its reader goes away, as tools do


def table_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def lines_of_json(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def both_places(node: Node, command: list[str], flag: str) -> list[str]:
    """The command's output with ``flag`` after it, then with it before the command."""
    return [node.smi_ok(*command, flag), node.smi_ok(flag, *command)]


def test_status_as_json_and_csv_before_or_after_the_command(node: Node) -> None:
    for shown in [*both_places(node, ["status"], "--json"), node.smi_ok("--json")]:
        parts = [p for g in json.loads(shown)["gpus"] for p in g["partitions"]]
        assert len(parts) == 8
        assert all(p["allocations"] == [] for p in parts)
    for shown in [*both_places(node, ["status"], "--csv"), node.smi_ok("--csv")]:
        assert shown.splitlines()[0] == ",".join(NODE_CSV)
        rows = table_rows(shown)
        assert [r["partition"] for r in rows] == [f"gpu{i}-spx-0" for i in range(8)]
        assert {r["mode"] for r in rows} == {"SPX"}
        assert all(int(r["memory_bytes"]) > 190 * 10**9 for r in rows)


def test_set_compute_as_json_and_csv(node: Node) -> None:
    command = ["set", "compute", "QPX", "--gpu", "1", "--dry-run"]
    for shown in both_places(node, command, "--json"):
        (event,) = lines_of_json(shown)
        assert (event["phase"], event["target"], event["gpu_indices"]) == ("Planned", "QPX", [1])
        assert event["dry_run"] is True
    for shown in both_places(node, command, "--csv"):
        assert shown.splitlines()[0] == ",".join(EVENT_CSV)
        (row,) = table_rows(shown)
        assert (row["phase"], row["gpus"], row["dry_run"]) == ("Planned", "1", "true")
        assert "would switch gpu 1 SPX -> QPX" in row["message"]
    # A real change over two GPUs: one header, every event of both, in order.
    shown = node.smi_ok("set", "compute", "DPX", "--gpu", "2,3", "--csv")
    assert shown.count("operation_id,") == 1
    rows = table_rows(shown)
    assert [r["phase"] for r in rows if r["gpus"] == "2"][-1] == "Succeeded"
    assert [r["phase"] for r in rows if r["gpus"] == "3"][-1] == "Succeeded"
    assert [g["compute_partition"] for g in node.show()["gpus"]][2:4] == ["DPX", "DPX"]


def test_set_memory_as_json_and_csv(node: Node) -> None:
    command = ["set", "memory", "NPS1", "--dry-run"]
    for shown in both_places(node, command, "--json"):
        (event,) = lines_of_json(shown)
        assert (event["kind"], event["target"], event["phase"]) == ("memory", "NPS1", "Succeeded")
    for shown in both_places(node, command, "--csv"):
        (row,) = table_rows(shown)
        assert (row["kind"], row["target"], row["gpus"]) == ("memory", "NPS1", "0 1 2 3 4 5 6 7")
    # Between "set" and "memory" too.
    (event,) = lines_of_json(node.smi_ok("set", "--json", *command[1:]))
    assert event["target"] == "NPS1"


def test_drain_and_undrain_as_json_and_csv(node: Node) -> None:
    for shown in both_places(node, ["drain", "--gpu", "4"], "--json"):
        (gpu,) = lines_of_json(shown)
        assert (gpu["index"], gpu["drained"]) == (4, True)
        assert gpu["partitions"][0]["allocations"] == []
    for shown in both_places(node, ["undrain", "--gpu", "4,5"], "--csv"):
        assert shown.splitlines()[0] == ",".join(GPU_CSV)
        assert [(r["gpu"], r["drained"]) for r in table_rows(shown)] == [
            ("4", "false"),
            ("5", "false"),
        ]
    (row,) = table_rows(node.smi_ok("--csv", "drain", "--gpu", "6"))
    assert (row["gpu"], row["drained"], row["compute_partition"]) == ("6", "true", "SPX")


def test_json_and_csv_together_is_a_usage_error(node: Node) -> None:
    for args in (["--json", "--csv"], ["--json", "status", "--csv"], ["drain", "--gpu", "1", "--json", "--csv"]):  # fmt: skip
        result = node.smi(*args)
        assert result.returncode == 2, args
        assert "--json" in result.stderr
        assert "--csv" in result.stderr
    assert node.show()["gpus"][1]["drained"] is False


def test_without_kubernetes_no_partition_shows_a_pod(node: Node) -> None:
    # A process on gpu2-spx-0: the partition is used, but no pod holds it.
    node.emu("ps", "add", "--gpu", "2", "--pid", "4242", "--name", "vllm-serve", "--vram", "10G")
    lines = node.smi_ok().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("GPU  PARTITION  "))
    assert lines[header].split() == [
        "GPU", "PARTITION", "MODE", "MEMORY", "USED/TOTAL", "POD", "LIMIT", "POD", "USES",
    ]  # fmt: skip
    rows = [line.split() for line in lines[header + 1 : header + 9]]
    assert [r[1] for r in rows] == [f"gpu{i}-spx-0" for i in range(8)]
    for r in rows:
        assert r[-3:] == ["-", "-", "-"], r
    assert rows[2][3:5] == ["10.0/192.0", "GiB"]
    assert any(line.split()[:4] == ["2", "gpu2-spx-0", "4242", "vllm-serve"] for line in lines)
    parts = [p for g in node.show()["gpus"] for p in g["partitions"]]
    assert [p["allocations"] for p in parts] == [[]] * 8
    assert {r["pod"] for r in table_rows(node.smi_ok("--csv"))} == {""}


def shown_gpus(node: Node, selection: str) -> list[int]:
    return [g["index"] for g in json.loads(node.smi_ok("status", "--gpu", selection, "--json"))["gpus"]]  # fmt: skip


def test_gpu_by_index_list_bdf_uuid_or_all(node: Node) -> None:
    gpus = node.show()["gpus"]
    bdf, uuid = gpus[5]["bdf"], gpus[6]["uuid"]
    assert shown_gpus(node, "3") == [3]
    assert shown_gpus(node, "1,3") == [1, 3]
    assert shown_gpus(node, bdf) == [5]
    assert shown_gpus(node, bdf.removeprefix("0000:")) == [5]
    assert shown_gpus(node, uuid) == [6]
    assert shown_gpus(node, uuid.upper()) == [6]
    assert shown_gpus(node, f"{bdf},{uuid},0") == [5, 6, 0]
    assert shown_gpus(node, "all") == list(range(8))
    # The table too: only the GPU asked for.
    table = node.smi_ok("status", "--gpu", bdf)
    assert "gpu5-spx-0" in table
    assert "gpu4-spx-0" not in table
    # And the commands that change GPUs.
    node.smi_ok("drain", "--gpu", uuid)
    assert [g["drained"] for g in node.show()["gpus"]] == [False] * 6 + [True, False]
    node.smi_ok("undrain", "--gpu", "all")
    assert not any(g["drained"] for g in node.show()["gpus"])
    out = node.smi_ok("set", "compute", "CPX", "--gpu", bdf, "--dry-run")
    assert "would switch gpu 5 SPX -> CPX" in out
    planned = lines_of_json(node.smi_ok("set", "compute", "DPX", "--gpu", "all", "--dry-run", "--json"))  # fmt: skip
    assert [e["gpu_indices"] for e in planned] == [[i] for i in range(8)]


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--gpu", "9"],
        ["set", "compute", "CPX", "--gpu", "0,9"],
        ["drain", "--gpu", "0000:99:00.0"],
        ["undrain", "--gpu", "not-a-gpu"],
    ],
)
def test_an_unknown_gpu_is_exit_2_and_lists_the_gpus(node: Node, command: list[str]) -> None:
    gpus = node.show()["gpus"]
    given = command[-1]
    result = node.smi(*command)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"--gpu {given}: no GPU " in result.stderr
    for g in gpus:
        assert f"{g['index']}   {g['bdf']}  {g['uuid']}" in result.stderr
    after = node.show()["gpus"]
    assert [(g["compute_partition"], g["drained"]) for g in after] == [("SPX", False)] * 8


def smi_command(node: Node, *args: str) -> str:
    return shlex.join([sys.executable, "-m", "mipart.smi.main", "--socket", str(node.socket), *args])  # fmt: skip


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--csv"]])
def test_watch_piped_into_head_ends_quietly(node: Node, fmt: list[str]) -> None:
    """``mipart-smi --watch | head -1``: head leaves after one line; the next snapshot meets a
    closed pipe, and mipart-smi exits 141 with nothing on stderr."""
    script = f"{smi_command(node, '--watch', *fmt)} | head -1; echo rc=${{PIPESTATUS[0]}}"
    pipeline = subprocess.Popen(  # mipart-smi's stderr is the pipeline's
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=node.env,
    )
    try:
        assert pipeline.stdout is not None
        first = pipeline.stdout.readline()
        assert first.strip()  # head's one line
        time.sleep(0.5)  # head is gone
        node.smi_ok("drain", "--gpu", "1")  # a change: the watch writes again
        out, err = pipeline.communicate(timeout=30)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
    assert err == ""
    assert out.strip() == f"rc={BROKEN_PIPE}"


@pytest.mark.parametrize("args", [[], ["--json"], ["--csv"], ["drain", "--gpu", "1"]])
def test_a_closed_stdout_ends_quietly(node: Node, args: list[str]) -> None:
    """The reader gone before the first write (as with ``| true``, or ``| head -1`` of output
    longer than the pipe holds)."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mipart.smi.main", "--socket", str(node.socket), *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=node.env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == BROKEN_PIPE
