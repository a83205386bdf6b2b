"""A state file the daemon cannot use stops it with one clear message, never a traceback, and
the file is left exactly as it was (it may record a half-done change an admin wants to read)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hack.devcluster.node import Node
from mipart.agent.partitions.store import (
    FORMAT_VERSION,
    ManagerState,
    PendingOperation,
    StateFileError,
    StateStore,
)
from mipart.geometry import ComputeMode, MemoryMode, NodeLayout

CORRUPT = "is corrupt"
MOVE_IT_AWAY = "move it away"


# A file as save() writes it, with every part set (test_a_full_state_round_trips checks).
VALID: dict[str, Any] = {
    "version": FORMAT_VERSION,
    "desired": {"memory": "NPS1", "compute": {"0": "CPX", "1": "SPX"}},
    "drained": [1],
    "held": [0],
    "operation": {
        "id": "op-1",
        "kind": "memory",
        "target": "NPS4",
        "gpus": [0, 1],
        "previous_memory": "NPS1",
    },
    "failures": {"1": "AMDGPU_RESTART_ERR"},
}
FULL = ManagerState(
    desired=NodeLayout(MemoryMode.NPS1, {0: ComputeMode.CPX, 1: ComputeMode.SPX}),
    drained=frozenset({1}),
    held=frozenset({0}),
    operation=PendingOperation("op-1", "memory", "NPS4", (0, 1), previous_memory="NPS1"),
    failures={1: "AMDGPU_RESTART_ERR"},
)


def load_refused(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    with pytest.raises(StateFileError) as refused:
        StateStore(path).load()
    assert path.read_bytes() == content, "the file was changed"
    return str(refused.value)


def test_a_full_state_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(FULL)
    assert json.loads(store.path.read_text()) == VALID
    assert store.load() == FULL


def test_what_save_writes_loads_back(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    state = ManagerState(
        desired=NodeLayout(MemoryMode.NPS4, dict.fromkeys(range(8), ComputeMode.CPX)),
        drained=frozenset({3}),
        operation=PendingOperation("op-2", "compute", "QPX", (5,)),
        failures={2: "busy"},
    )
    store.save(state)
    assert store.load() == state


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"[]", "the file: list where an object belongs"),
        (b"null", "the file: NoneType where an object belongs"),
        (b"\xff\xfe\x00binary", "utf-8"),
        (b'{"version": 1, "desired": {"memory": "NPS8", "compute": {}}}', "desired.memory: 'NPS8'"),
        (
            b'{"version": 1, "desired": {"memory": "NPS1", "compute": {"0": "TPX"}}}',
            "desired.compute['0']: 'TPX' is not one of SPX, DPX, QPX, CPX",
        ),
        (b'{"version": 1, "drained": ["0"]}', "drained[0]: '0' is not a GPU index"),
        (b'{"version": 1, "drained": [true]}', "drained[0]: True is not a GPU index"),
        (b'{"version": 1, "failures": {"gpu1": "x"}}', "failures: key 'gpu1' is not a GPU index"),
        (b'{"version": 1, "drianed": []}', "the file: unknown key 'drianed'"),
        (b'{"drained": []}', "the file: 'version' is missing"),
        (
            b'{"version": 1, "operation": {"id": "x", "kind": "reboot", "target": "SPX", "gpus": []}}',
            "operation.kind: 'reboot' is not one of compute, memory",
        ),
        (
            b'{"version": 1, "operation": {"id": "x", "kind": "memory", "target": "CPX", "gpus": []}}',
            "operation.target: 'CPX' is not one of NPS1, NPS2, NPS4",
        ),
        (b"[" * 100_000, CORRUPT),
        (b'{"version": 1, "drained": [' + b"9" * 5000 + b"]}", CORRUPT),
    ],
)
def test_each_corrupt_form_is_named(tmp_path: Path, content: bytes, named: str) -> None:
    message = load_refused(tmp_path / "state.json", content)
    assert named in message
    assert message.startswith(f"state file {tmp_path / 'state.json'} is corrupt (")
    assert message.endswith(MOVE_IT_AWAY)


def test_another_version_is_named_as_such(tmp_path: Path) -> None:
    message = load_refused(tmp_path / "state.json", b'{"version": 2, "future": true}')
    assert message.endswith(f"has version 2, this daemon reads version {FORMAT_VERSION}")


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """The valid file with one value anywhere in it replaced by any JSON value, or its bytes
    cut short, or bytes of any kind."""
    how = draw(st.sampled_from(["replace", "truncate", "bytes"]))
    text = json.dumps(valid).encode()
    if how == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    if how == "bytes":
        return draw(st.binary(max_size=200))
    doc = json.loads(text)
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        children = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, child in children:
            walk(child, [*path, key])

    walk(doc, [])
    path = draw(st.sampled_from(paths))
    value = draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=6), inner, max_size=3)
            ),
            max_leaves=6,
        )
    )
    if not path:
        return json.dumps(value).encode()
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return json.dumps(doc).encode()


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=mutated(VALID))
def test_any_damage_loads_or_is_refused_with_the_one_message(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    try:
        state = StateStore(path).load()
    except StateFileError as err:
        message = str(err)
        assert message.endswith(MOVE_IT_AWAY) or "has version" in message, message
    else:
        # What loads is what save() would write again.
        assert isinstance(state, ManagerState)
        StateStore(tmp_path / "again.json").save(state)
        assert StateStore(tmp_path / "again.json").load() == state
    assert path.read_bytes() == content


def test_the_daemon_stops_with_the_message_and_no_traceback(
    emulator_build: Path, tmp_path: Path
) -> None:
    node = Node(emulator_build, tmp_path)
    state = tmp_path / "state" / "state.json"
    state.parent.mkdir()
    state.write_bytes(b'{"version": 1, "drained": "all"}')
    result = subprocess.run(
        [sys.executable, "-m", "mipart.agent.main", "--socket", str(node.socket),
         "--state-dir", str(state.parent), "--metrics-address", "off"],
        env=node.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mipart-daemon: state file {state} is corrupt (drained: str where a list of GPU "
        "indexes belongs); move it away"
    )
    assert state.read_bytes() == b'{"version": 1, "drained": "all"}'
