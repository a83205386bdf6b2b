"""The issue's acceptance behaviour, end to end: mipart-smi -> gRPC -> daemon -> amdsmi ->
emulated libamd_smi."""

from __future__ import annotations

import json
from typing import Any

from hack.devcluster.node import Node

GB = 10**9
GIB = 2**30


def gpus(node: dict[str, Any]) -> list[dict[str, Any]]:
    return list(node["gpus"])


def test_eight_mi300x_in_spx_nps1(node: Node) -> None:
    shown = node.show()
    assert shown["memory_partition"] == "NPS1"
    assert len(gpus(shown)) == 8
    for gpu in gpus(shown):
        assert gpu["market_name"] == "AMD Instinct MI300X"
        assert gpu["compute_partition"] == "SPX"
        assert gpu["memory_partition"] == "NPS1"
        (part,) = gpu["partitions"]
        assert part["compute_units"] == 304
        assert 190 * GB < part["memory_bytes"] < 210 * GB  # "192 GB"
        assert part["id"] == f"gpu{gpu['index']}-spx-0"
    assert len({g["bdf"] for g in gpus(shown)}) == 8
    table = node.smi_ok()
    assert "memory partition NPS1" in table.splitlines()[0]
    assert "gpu7-spx-0" in table
    assert "MEMORY USED/TOTAL  POD  LIMIT  POD USES" in table


def test_cpx_on_gpu0_leaves_the_others_alone(node: Node) -> None:
    before = gpus(node.show())
    out = node.smi_ok("set", "compute", "CPX", "--gpu", "0")
    assert "Switching" in out
    assert "Succeeded" in out
    after = gpus(node.show())
    gpu0 = after[0]
    assert gpu0["compute_partition"] == "CPX"
    assert len(gpu0["partitions"]) == 8
    for part in gpu0["partitions"]:
        assert part["compute_units"] == 38
        assert round(part["memory_bytes"] / GIB) == 24
    assert len({p["render_minor"] for p in gpu0["partitions"]}) == 8
    assert [p["id"] for p in gpu0["partitions"]] == [f"gpu0-cpx-{i}" for i in range(8)]
    for b, a in zip(before[1:], after[1:], strict=True):
        assert a["compute_partition"] == b["compute_partition"] == "SPX"
        assert [p["id"] for p in a["partitions"]] == [p["id"] for p in b["partitions"]]


def test_nps4_refused_while_a_gpu_is_spx(node: Node) -> None:
    node.smi_ok("set", "compute", "CPX", "--gpu", "0")
    result = node.smi("set", "memory", "NPS4")
    assert result.returncode == 1
    assert "FAILED_PRECONDITION" in result.stderr
    assert "gpu 1 is SPX" in result.stderr
    assert "CPX+NPS4" in result.stderr
    assert "QPX+NPS4" in result.stderr
    shown = node.show()
    assert shown["memory_partition"] == "NPS1"
    assert [g["compute_partition"] for g in gpus(shown)] == ["CPX"] + ["SPX"] * 7


def test_nps4_with_every_gpu_idle_in_cpx_reloads_with_progress(node: Node) -> None:
    node.smi_ok("set", "compute", "CPX", "--gpu", "0,1,2,3,4,5,6,7")
    out = node.smi_ok("set", "memory", "NPS4")
    phases = [line.split("] ", 1)[1].split()[0] for line in out.splitlines()]
    assert phases[0] == "Draining"
    assert "Reloading" in phases
    assert phases[-1] == "Succeeded"
    shown = node.show()
    assert shown["memory_partition"] == "NPS4"
    for gpu in gpus(shown):
        # The driver's AUTO mode after a reload into NPS4 is CPX.
        assert (gpu["compute_partition"], gpu["memory_partition"]) == ("CPX", "NPS4")
        assert [p["memory_pool"] for p in gpu["partitions"]] == [
            f"gpu{gpu['index']}-pool{i // 2}" for i in range(8)
        ]
    # QPX is valid under NPS4; SPX is not.
    node.smi_ok("set", "compute", "QPX", "--gpu", "5")
    refused = node.smi("set", "compute", "SPX", "--gpu", "5")
    assert refused.returncode == 1
    assert "SPX cannot run with NPS4" in refused.stderr


def test_a_process_makes_the_gpu_busy(node: Node) -> None:
    node.emu("ps", "add", "--gpu", "2", "--pid", "4242", "--name", "vllm-serve", "--vram", "10G")
    result = node.smi("set", "compute", "CPX", "--gpu", "2")
    assert result.returncode == 1
    assert "BUSY" in result.stderr
    assert "vllm-serve (pid 4242" in result.stderr
    shown = node.show()
    assert gpus(shown)[2]["compute_partition"] == "SPX"
    (part,) = gpus(shown)[2]["partitions"]
    assert [p["pid"] for p in part["processes"]] == [4242]
    # Another GPU is not affected by GPU 2's process.
    node.smi_ok("set", "compute", "DPX", "--gpu", "3")
    # Nor can the node reload while any process is attached.
    node.smi_ok("set", "compute", "CPX", "--gpu", "0,1,3,4,5,6,7")
    assert node.smi("set", "memory", "NPS4").returncode == 1


def test_dry_run_touches_nothing(node: Node) -> None:
    out = node.smi_ok("set", "compute", "QPX", "--gpu", "1", "--dry-run")
    assert "Planned" in out
    assert "would switch gpu 1 SPX -> QPX" in out
    assert gpus(node.show())[1]["compute_partition"] == "SPX"


def test_bad_requests_name_the_field_and_the_allowed_values(node: Node) -> None:
    bad_mode = node.smi("set", "compute", "TPX", "--gpu", "0")
    assert bad_mode.returncode == 1
    assert "INVALID_ARGUMENT" in bad_mode.stderr
    assert "compute_partition: 'TPX' is not a compute mode; allowed: SPX, DPX, QPX, CPX" in (
        bad_mode.stderr
    )
    bad_gpu = node.smi("set", "compute", "CPX", "--gpu", "9")
    assert bad_gpu.returncode == 2
    assert "--gpu 9: no GPU '9' on node" in bad_gpu.stderr
    bad_memory = node.smi("set", "memory", "NPS8")
    assert "memory_partition: 'NPS8' is not a memory mode" in bad_memory.stderr
    usage = node.smi("set", "compute", "CPX", "--gpu", "")
    assert usage.returncode == 2
    assert "--gpu takes an index, a comma list, a BDF, a UUID or all" in usage.stderr
    assert node.show()["gpus"][0]["compute_partition"] == "SPX"


def test_drain_and_undrain(node: Node) -> None:
    assert "gpu 4: drained" in node.smi_ok("drain", "--gpu", "4")
    assert gpus(node.show())[4]["drained"] is True
    node.smi_ok("undrain", "--gpu", "4")
    assert gpus(node.show())[4]["drained"] is False


def test_watch_streams_each_change(node: Node) -> None:
    watcher = node.smi_process("--watch", "--json")
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["gpus"][5]["compute_partition"] == "SPX"
        node.smi_ok("set", "compute", "CPX", "--gpu", "5")
        for line in watcher.stdout:
            snapshot = json.loads(line)
            if snapshot["gpus"][5]["compute_partition"] == "CPX":
                assert len(snapshot["gpus"][5]["partitions"]) == 8
                break
    finally:
        watcher.kill()
        watcher.wait()
