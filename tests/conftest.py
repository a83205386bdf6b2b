"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack.devcluster.emulator import build_emulator


@pytest.fixture(scope="session")
def emulator_build() -> Path:
    """The MI300X emulator (libamd_smi.so and amdsmi-emu), built once per session."""
    build = build_emulator()
    assert (build / "lib" / "libamd_smi.so").is_file()
    return build
