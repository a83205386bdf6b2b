"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from hack.devcluster.emulator import build_emulator

# Property tests check behaviour, not speed (benchmarks measure that): hypothesis' default
# 200 ms deadline per example only turns a busy two-core machine into a flaky failure.
settings.register_profile("mipart", deadline=None)
settings.load_profile("mipart")


@pytest.fixture(scope="session")
def emulator_build() -> Path:
    """The MI300X emulator (libamd_smi.so and amdsmi-emu), built once per session."""
    build = build_emulator()
    assert (build / "lib" / "libamd_smi.so").is_file()
    return build
