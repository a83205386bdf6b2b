"""Logging follows sys.stderr: a process (or a test runner) that swaps the stream after
logging was configured must neither lose lines nor write into a closed stream."""

import io
import json
import sys
from collections.abc import Iterator

import pytest
import structlog

from mipart.runtime import logs


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_lines_go_to_the_stream_current_at_each_write(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("json")
    log = structlog.get_logger("test")
    log.info("before.swap")
    first.close()

    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("after.swap", n=1)

    (line,) = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "after.swap"
