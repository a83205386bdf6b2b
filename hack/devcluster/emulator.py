"""The MI300X emulator (hack/amdsmi-emulator): where it is built and how to build it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hack.devcluster.binaries import REPO_ROOT

EMULATOR = REPO_ROOT / "hack" / "amdsmi-emulator"
EMULATOR_BUILD = EMULATOR / "build"


def build_emulator() -> Path:
    """libamd_smi.so and amdsmi-emu, built (or found up to date) by make.

    The Makefile checks its structs against the amdsmi package, so it must run the Python
    that has amdsmi: this one, whatever python3 is first on PATH.
    """
    proc = subprocess.run(
        ["make", "-s", "-C", str(EMULATOR), f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the emulator failed:\n{proc.stdout}\n{proc.stderr}")
    return EMULATOR_BUILD
