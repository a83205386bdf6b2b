"""Fixtures for the daemon's tests: a real mipart-daemon over the emulated libamd_smi."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster.node import Node


@pytest.fixture
def node(emulator_build: Path, tmp_path: Path) -> Iterator[Node]:
    n = Node(emulator_build, tmp_path)
    n.start()
    yield n
    n.stop()


@pytest.fixture
def stopped_node(emulator_build: Path, tmp_path: Path) -> Iterator[Node]:
    n = Node(emulator_build, tmp_path)
    yield n
    n.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when == "call":
        for fixture in ("node", "stopped_node"):
            n = item.funcargs.get(fixture) if hasattr(item, "funcargs") else None
            if isinstance(n, Node):
                report.sections.append(("daemon log", n.log()[-8000:]))
    return report
