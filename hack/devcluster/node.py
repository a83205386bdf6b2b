"""One emulated MI300X node: a real mipart-daemon over the emulated libamd_smi, driven
through mipart-smi and amdsmi-emu."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One emulated MI300X node: the emulator's state file, a daemon, and the CLIs."""

    build: Path
    tmp: Path
    reload_seconds: float = 1.0
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.tmp / "run" / "node.sock"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ROCM_PATH": str(self.build),
            "ROCM_HOME": str(self.build),  # amdsmi looks here first
            "MIPART_EMULATOR_STATE": str(self.tmp / "emulator.state"),
            "MIPART_EMULATOR_RELOAD_SECONDS": str(self.reload_seconds),
        }

    def start(self, *args: str) -> None:
        log = (self.tmp / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mipart.agent.main",
                "--socket",
                str(self.socket),
                "--state-dir",
                str(self.tmp / "state"),
                "--metrics-address",
                "off",
                "--poll-interval",
                "0.5",
                "--reload-estimate",
                str(self.reload_seconds),
                "--log-format",
                "json",
                *self.extra_args,
                *args,
            ],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while self.smi("--timeout", "1").returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not come up:\n{self.log()}")
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.kill(signal.SIGTERM)

    def log(self) -> str:
        path = self.tmp / "daemon.log"
        return path.read_text() if path.exists() else ""

    def smi(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mipart.smi.main", "--socket", str(self.socket), *args],
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def smi_process(self, *args: str) -> subprocess.Popen[str]:
        """mipart-smi running in the background (a long change to interrupt)."""
        return subprocess.Popen(
            [sys.executable, "-m", "mipart.smi.main", "--socket", str(self.socket), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def smi_ok(self, *args: str) -> str:
        result = self.smi(*args)
        assert result.returncode == 0, f"mipart-smi {' '.join(args)}: {result.stderr}"
        return result.stdout

    def show(self) -> dict[str, Any]:
        return dict(json.loads(self.smi_ok("--json")))

    def emu(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.build / "bin" / "amdsmi-emu"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        )

    def wait_for(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            node = self.show()
            if predicate(node):
                return node
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached; last state: {node}")
            time.sleep(0.3)
