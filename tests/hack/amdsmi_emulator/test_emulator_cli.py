"""The amdsmi-emu CLI, the state file, and the build-time checks (stubs, struct layouts)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from hack.devcluster.emulator import EMULATOR

INIT_ERROR = 18


def test_help_lists_the_commands(emu):
    for args in (["--help"], ["help"], ["ps", "add", "--help"]):
        out = emu.cli(*args).stdout
        for command in ("show", "ps add", "ps rm", "reboot", "set-reload-delay", "reset"):
            assert command in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "missing command"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["show", "extra"], "show takes no arguments"),
        (["ps"], "ps needs a subcommand"),
        (["ps", "kill"], "unknown ps subcommand"),
        (["ps", "add", "--pid", "1", "--name", "x", "--vram", "1G"], "--gpu N"),
        (["ps", "add", "--gpu", "8", "--pid", "1", "--name", "x", "--vram", "1G"], "--gpu N"),
        (["ps", "add", "--gpu", "0", "--name", "x", "--vram", "1G"], "--pid PID"),
        (["ps", "add", "--gpu", "0", "--pid", "-3", "--name", "x", "--vram", "1G"], "--pid PID"),
        (["ps", "add", "--gpu", "0", "--pid", "1", "--vram", "1G"], "--name NAME"),
        (["ps", "add", "--gpu", "0", "--pid", "1", "--name", "x"], "--vram SIZE"),
        (["ps", "add", "--gpu", "0", "--pid", "1", "--name", "x", "--vram", "lots"], "got 'lots'"),
        (["ps", "add", "--gpu", "0", "--pid", "1", "--name", "x", "--vram", "-1G"], "--vram SIZE"),
        (
            [
                "ps",
                "add",
                "--gpu",
                "0",
                "--pid",
                "1",
                "--name",
                "x",
                "--vram",
                "1G",
                "--busy",
                "101",
            ],
            "--busy",
        ),
        (
            [
                "ps",
                "add",
                "--gpu",
                "0",
                "--pid",
                "1",
                "--name",
                "x",
                "--vram",
                "1G",
                "--color",
                "red",
            ],
            "unknown option",
        ),
        (["ps", "add", "--gpu", "0", "--gpu", "1"], "given twice"),
        (["ps", "add", "--gpu"], "needs a value"),
        (["ps", "rm"], "exactly one of --pid PID or --all"),
        (["ps", "rm", "--pid", "1", "--all"], "exactly one of --pid PID or --all"),
        (["ps", "rm", "--pid", "x"], "--pid must be a positive integer"),
        (["set-reload-delay"], "seconds 0-3600"),
        (["set-reload-delay", "soon"], "seconds 0-3600"),
        (["set-reload-delay", "-1"], "seconds 0-3600"),
        (["reset", "--gpus", "0"], "--gpus must be 1-8"),
        (["reset", "--gpus", "9"], "--gpus must be 1-8"),
        (["reset", "--caps", "NPS4"], "must include NPS1"),
        (["reset", "--caps", "NPS1,NPS8"], "NPS8 is defined in the API but not supported"),
        (["reset", "--caps", "NPS1,NPS3"], "unknown memory partition mode 'NPS3'"),
        (["--state"], "--state needs a path"),
    ],
)
def test_bad_command_lines_exit_2_with_a_clear_message(emu, args, message):
    proc = emu.cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("amdsmi-emu: ")


def test_requests_the_node_refuses_exit_1(emu):
    add = ["ps", "add", "--pid", "10", "--name", "vllm"]
    cases = [
        (
            [*add, "--gpu", "0", "--partition", "1", "--vram", "1G"],
            "GPU 0 is in SPX and has partitions 0-0",
        ),
        (
            [*add, "--gpu", "0", "--vram", "200G"],
            "does not fit: GPU 0 partition 0 has 196592 of 196592 MiB free",
        ),
        (["ps", "rm", "--pid", "10"], "no fake process with pid 10"),
    ]
    for args, message in cases:
        proc = emu.cli(*args, check=False)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr
    emu.cli(*add, "--gpu", "0", "--vram", "1G")
    proc = emu.cli(*add, "--gpu", "0", "--vram", "1G", check=False)
    assert proc.returncode == 1
    assert "already on GPU 0 partition 0" in proc.stderr


def test_show_describes_the_node(emu):
    emu.cli("reset", "--gpus", "2", "--reload-delay", "7")
    emu.cli(
        "ps",
        "add",
        "--gpu",
        "1",
        "--pid",
        "31337",
        "--name",
        "vllm serve",
        "--vram",
        "1.5G",
        "--busy",
        "40",
    )
    out = emu.cli("show").stdout
    assert str(emu.state) in out
    assert "memory mode:  NPS1 (pending: none, caps: NPS1,NPS4)" in out
    assert "reload delay: 7 s" in out
    assert "31337" in out
    assert "1536 MiB" in out
    assert "vllm serve" in out
    assert emu.cli("path").stdout.strip() == str(emu.state)
    assert emu.run("result = len(amdsmi_get_socket_handles())") == 2


def test_state_file_is_readable_text(emu):
    emu.cli(
        "ps", "add", "--gpu", "3", "--pid", "12", "--name", "a b c", "--vram", "4096", "--busy", "7"
    )
    lines = emu.state.read_text().splitlines()
    assert "format 1" in lines
    assert "gpus 8" in lines
    assert "nps_caps NPS1,NPS4" in lines
    assert "memory_mode NPS1" in lines
    assert sum(line.startswith("gpu ") and " mode SPX " in line for line in lines) == 8
    procs = [line for line in lines if line.startswith("proc ")]
    assert len(procs) == 1
    assert procs[0].startswith("proc pid 12 gpu 3 partition 0 vram 4096 busy 7 started ")
    assert procs[0].endswith(" name a b c")


def test_a_broken_state_file_is_reported_not_guessed(emu):
    emu.state.write_text("format 1\ngpus 8\nmemory_mode NPS3\n")
    proc = emu.cli("show", check=False)
    assert proc.returncode == 1
    assert "line 3" in proc.stderr
    assert "memory_mode" in proc.stderr
    r = emu.run("result = code(amdsmi_init)", init=False)
    assert r == INIT_ERROR


def test_hand_edits_that_break_the_rules_are_rejected(emu):
    emu.cli("show")
    text = emu.state.read_text().replace("memory_mode NPS1", "memory_mode NPS4")
    emu.state.write_text(text)  # SPX with NPS4 is not a valid combination
    proc = emu.cli("show", check=False)
    assert proc.returncode == 1
    assert "gpu 0: SPX is not valid with NPS4" in proc.stderr


def test_concurrent_writers_lose_no_update(emu):
    emu.cli("show")

    def add(pid: int) -> int:
        return emu.cli(
            "ps",
            "add",
            "--gpu",
            str(pid % 8),
            "--pid",
            str(pid),
            "--name",
            f"p{pid}",
            "--vram",
            "1M",
            check=False,
        ).returncode

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(add, range(1, 25)))
    assert codes == [0] * 24
    assert sum(line.startswith("proc ") for line in emu.state.read_text().splitlines()) == 24


def test_struct_layouts_match_the_wheel(emulator_build):
    proc = subprocess.run(
        [
            sys.executable,
            str(EMULATOR / "tools" / "check_layout.py"),
            "--dump",
            str(emulator_build / "bin" / "layout-dump"),
            "--lib-dir",
            str(emulator_build / "lib"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "structs match" in proc.stdout


def test_layout_check_catches_a_mismatch(emulator_build):
    # Shift one field and drop another in the C description: the check must name both.
    code = f"""
import json, subprocess, sys
sys.path.insert(0, {str(EMULATOR / "tools")!r})
import check_layout, gen_stubs
layout = json.loads(subprocess.run([{str(emulator_build / "bin" / "layout-dump")!r}],
                                   capture_output=True, text=True, check=True).stdout)
kfd = layout["struct_amdsmi_kfd_info_t"]["fields"]
kfd["node_id"][0] += 4
del kfd["reserved"]
module = check_layout.load_wrapper(__import__("pathlib").Path({str(emulator_build / "lib")!r}),
                                   gen_stubs.find_wrapper())
print("\\n".join(check_layout.compare(module, layout)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "struct_amdsmi_kfd_info_t.node_id: C offset/size 12/4 != ctypes 8/4" in out
    assert "fields missing on the C side: reserved" in out


def test_stub_generator_rejects_unknown_hand_written_symbols(emulator_build, tmp_path):
    src = tmp_path / "typo.c"
    src.write_text("unsigned amdsmi_get_gpu_asci_info(void) { return 0; }\n")
    obj = tmp_path / "typo.o"
    subprocess.run(["gcc", "-c", str(src), "-o", str(obj)], check=True)
    proc = subprocess.run(
        [
            sys.executable,
            str(EMULATOR / "tools" / "gen_stubs.py"),
            "--out",
            str(tmp_path / "s.c"),
            str(obj),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "amdsmi_get_gpu_asci_info" in proc.stderr


def test_every_symbol_the_wheel_binds_is_exported(emulator_build):
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gen_stubs; print(*gen_stubs.bound_symbols(gen_stubs.find_wrapper()))",
        ],
        cwd=EMULATOR / "tools",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = set(listing.split())
    nm = subprocess.run(
        ["nm", "-D", "--defined-only", str(emulator_build / "lib" / "libamd_smi.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = {line.split()[-1] for line in nm.splitlines()}
    assert wanted <= exported
    assert len(wanted) > 150
