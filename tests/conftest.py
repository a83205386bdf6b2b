"""Fixtures shared by every test folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMULATOR = REPO / "hack" / "amdsmi-emulator"
EMULATOR_BUILD = EMULATOR / "build"


@pytest.fixture(scope="session")
def emulator_build() -> Path:
    """The MI300X emulator (libamd_smi.so and amdsmi-emu), built once per session."""
    proc = subprocess.run(["make", "-C", str(EMULATOR)], capture_output=True, text=True)
    assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"
    assert (EMULATOR_BUILD / "lib" / "libamd_smi.so").is_file()
    return EMULATOR_BUILD
