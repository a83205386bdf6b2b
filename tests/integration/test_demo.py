"""The demo's story on the real control plane, asserted: pods bound after a re-partition, a
preemption within the PodDisruptionBudget, and no pod left waiting that the final layout
could hold. Then the demo's entry point itself, with no virtualenv on PATH, leaves no
process behind (after a run, and after `--keep` then `down`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hack.devcluster.binaries import REPO_ROOT
from hack.devcluster.controlplane import ControlPlane
from hack.devcluster.scenario import LAYOUTS, Story
from hack.devcluster.stack import Stack

pytestmark = pytest.mark.integration


def test_the_demo_story_repartitions_preempts_and_leaves_nothing_placeable_waiting(
    stack: Stack, api: Any, namespace: str, control_plane: ControlPlane
) -> None:
    story = Story(control_plane, api, stack, namespace)
    story.start()
    nodes = control_plane.node_names[: len(LAYOUTS)]
    spx_before = sum(1 for layout in LAYOUTS for gpu in range(8) if layout.get(gpu, "SPX") == "SPX")

    samples = story.place_samples()
    assert len(samples.placed) == 10
    assert all(p.node in nodes for p in samples.placed.values())

    batch = story.fill_with_batch()
    bound = [p for name, p in batch.placed.items() if name.startswith("llama-70b-batch-")]
    # (b) More 70B replicas are bound than there were SPX GPUs free, on GPUs the controller
    # switched to SPX; the ones left wait in the queue, and none of them would fit now.
    assert story.repartitions > 0
    assert story.controller_metric('mipart_planner_decisions_total{from="CPX"') > 0
    spx_now = sum(
        1
        for d in stack.daemons.values()
        for g in d.show()["gpus"]
        if g["compute_partition"] == "SPX"
    )
    assert spx_now > spx_before
    assert len(bound) > spx_before - 1  # the sample llama-70b holds one SPX GPU
    assert all(len(p.partitions) == 1 and "-spx-" in p.partitions[0] for p in bound)
    assert batch.queued, "the fleet was meant to ask for more than the nodes hold"
    assert story.unplaceable() == []

    after = story.latency_arrives()
    # (c) The latency pod got a GPU by evicting exactly one batch replica (the fewest that
    # make room, within the fleet's budget), whose replacement is back in the queue.
    assert after.placed["chat-70b"].qos == "latency"
    assert len(story.preempted) == 1
    assert story.preempted[0].startswith("llama-70b-batch-")
    assert all(not p.startswith("llama-70b-batch-") for p in after.pending)
    assert len(after.queued) == len(batch.queued) + 1
    assert story.unplaceable() == []

    lines = story.summary()
    assert "whole GPU:" in lines[2]


def _without_venv(path: str) -> str:
    venv = str(REPO_ROOT / ".venv" / "bin")
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and p != venv)


def _demo_processes(workdir: Path) -> list[str]:
    """Processes whose command line names the demo's directory: what it started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # Not a filter on "pytest": the workdir itself is under pytest's tmp_path.
        if str(workdir) in cmdline and int(proc.name) != os.getpid():
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _demo(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": _without_venv(os.environ["PATH"])}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(REPO_ROOT / "hack" / "demo"), *args, "--dir", str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


@pytest.mark.timeout(1500)
@pytest.mark.usefixtures("control_plane")
def test_the_demo_runs_without_a_virtualenv_on_path_and_stops_everything(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    result = _demo(workdir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for step in ("(a) the sample workloads", "(b) a batch fleet", "(c) a latency-class pod",
                 "(d) the queue", "(e) mipart-smi", "(f) summary", "whole GPU:"):  # fmt: skip
        assert step in result.stdout, step
    assert _demo_processes(workdir) == []

    kept = _demo(workdir, "--keep")
    assert kept.returncode == 0, kept.stdout[-4000:] + kept.stderr[-4000:]
    assert "export KUBECONFIG=" in kept.stdout
    assert _demo_processes(workdir), "--keep left nothing running"
    stopped = _demo(workdir, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "the control plane" in stopped.stdout
    assert _demo_processes(workdir) == []
