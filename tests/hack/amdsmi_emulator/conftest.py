"""Fixtures for the MI300X emulator tests.

The real ``amdsmi`` package binds libamd_smi.so when it is imported, so every scenario runs in a
fresh Python subprocess whose environment points ROCM_PATH (and ROCM_HOME, which the wrapper
prefers) at the emulator and MIPART_EMULATOR_STATE at a per-test file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# Runs before every snippet: the snippet sets `result`, which comes back as JSON.
PRELUDE = """
import json, subprocess, sys
import amdsmi
from amdsmi import *
from amdsmi import amdsmi_wrapper

def code(fn, *args):
    '''The amdsmi status a call fails with, 0 if it succeeds.'''
    try:
        fn(*args)
        return 0
    except AmdSmiLibraryException as exc:
        return exc.get_error_code()

def cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=True).stdout

def gpu_handles(socket):
    '''Processor handles of one socket (one physical GPU), in partition order.'''
    count = amdsmi_wrapper.ctypes.c_uint32(0)
    null = amdsmi_wrapper.ctypes.POINTER(amdsmi_wrapper.amdsmi_processor_handle)()
    byref = amdsmi_wrapper.ctypes.byref
    amdsmi_wrapper.amdsmi_get_processor_handles(socket, byref(count), null)
    arr = (amdsmi_wrapper.amdsmi_processor_handle * count.value)()
    rc = amdsmi_wrapper.amdsmi_get_processor_handles(socket, byref(count), arr)
    assert rc == 0, rc
    return [amdsmi_wrapper.amdsmi_processor_handle(arr[i]) for i in range(count.value)]

result = None
"""


@dataclass
class Emulator:
    state: Path
    env: dict[str, str]
    cli_path: Path

    def run(
        self, snippet: str, *, setup: str = "", init: bool = True, env: dict[str, str] | None = None
    ):
        """Runs `snippet` in a fresh interpreter with the real amdsmi; returns its `result`.

        `setup` (helper definitions) runs first; amdsmi_init() is called unless init=False."""
        code = f"CLI = {str(self.cli_path)!r}\n" + PRELUDE + textwrap.dedent(setup) + "\n"
        if init:
            code += "amdsmi_init()\n"
        code += textwrap.dedent(snippet) + "\nprint('@@RESULT@@' + json.dumps(result))\n"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"snippet failed:\n{proc.stdout}\n{proc.stderr}"
        marker = proc.stdout.rindex("@@RESULT@@")
        return json.loads(proc.stdout[marker + len("@@RESULT@@") :])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.cli_path), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"amdsmi-emu {' '.join(args)} failed:\n{proc.stderr}"
        return proc


@pytest.fixture
def emu(emulator_build: Path, tmp_path: Path) -> Emulator:
    state = tmp_path / "node.state"
    env = dict(os.environ)
    env.update(
        ROCM_PATH=str(emulator_build),
        ROCM_HOME=str(emulator_build),
        MIPART_EMULATOR_STATE=str(state),
        MIPART_EMULATOR_RELOAD_SECONDS="0",
    )
    return Emulator(state=state, env=env, cli_path=emulator_build / "bin" / "amdsmi-emu")
