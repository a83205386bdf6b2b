"""Desired state survives the daemon: crashes mid-change and emulated reboots."""

from __future__ import annotations

import json
import time

from hack.devcluster.node import Node


def test_reboot_reverts_to_spx_and_the_daemon_reconciles(stopped_node: Node) -> None:
    node = stopped_node
    node.start()
    node.smi_ok("set", "compute", "CPX", "--gpu", "1")
    node.smi_ok("set", "compute", "QPX", "--gpu", "6")
    node.stop()
    node.emu("reboot")
    node.start()
    shown = node.wait_for(
        lambda n: (
            [g["compute_partition"] for g in n["gpus"]][1] == "CPX"
            and n["gpus"][6]["compute_partition"] == "QPX"
        )
    )
    assert [g["compute_partition"] for g in shown["gpus"]] == [
        "SPX",
        "CPX",
        "SPX",
        "SPX",
        "SPX",
        "SPX",
        "QPX",
        "SPX",
    ]


def test_reboot_after_nps4_reconciles_memory_then_compute(stopped_node: Node) -> None:
    node = stopped_node
    node.start()
    node.smi_ok("set", "compute", "CPX", "--gpu", ",".join(map(str, range(8))))
    node.smi_ok("set", "memory", "NPS4")
    node.smi_ok("set", "compute", "QPX", "--gpu", "0")
    node.stop()
    node.emu("reboot")
    node.start()
    shown = node.wait_for(
        lambda n: n["memory_partition"] == "NPS4" and n["gpus"][0]["compute_partition"] == "QPX",
        timeout=60,
    )
    assert [g["compute_partition"] for g in shown["gpus"]] == ["QPX"] + ["CPX"] * 7


def test_sigkill_during_a_reload_is_finished_or_rolled_back(stopped_node: Node) -> None:
    node = stopped_node
    node.reload_seconds = 4
    node.start()
    node.smi_ok("set", "compute", "CPX", "--gpu", ",".join(map(str, range(8))))
    change = node.smi_process("set", "memory", "NPS4")
    state = node.tmp / "state" / "state.json"
    deadline = time.monotonic() + 20
    while json.loads(state.read_text())["operation"] is None:
        assert time.monotonic() < deadline, "the change was never persisted"
        time.sleep(0.05)
    node.kill()
    change.wait(timeout=30)
    node.start()
    shown = node.wait_for(lambda n: not n["recovering"] and "operation" not in n)
    persisted = json.loads(state.read_text())
    assert persisted["operation"] is None
    modes = {(g["compute_partition"], g["memory_partition"]) for g in shown["gpus"]}
    # Never half-applied: the node is wholly NPS4 (the reload went through before the kill)
    # or wholly as before, and the persisted desired layout agrees with the hardware.
    assert modes in ({("CPX", "NPS4")}, {("CPX", "NPS1")})
    assert persisted["desired"]["memory"] == shown["memory_partition"]
    # The node is usable: a change after recovery works.
    node.smi_ok("set", "compute", "QPX", "--gpu", "3")


def test_restart_keeps_drains(stopped_node: Node) -> None:
    node = stopped_node
    node.start()
    node.smi_ok("drain", "--gpu", "2")
    node.kill()
    node.start()
    assert node.show()["gpus"][2]["drained"] is True
