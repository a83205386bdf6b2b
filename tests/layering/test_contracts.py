"""The import-linter contracts hold, cover every package, and fail when broken.

lint-imports only checks the packages it is told about, so a package added to a folder and
not to ``root_packages`` would escape every contract; and a contract that cannot fail proves
nothing. These tests run the real linter over a copy of the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hack.devcluster.binaries import REPO_ROOT

# The folders that hold the mipart namespace (setup.py maps them the same way).
FOLDERS = ("domain", "common", "daemon", "extender", "protos")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def packages_in_tree() -> set[str]:
    return {
        f"mipart.{p.name}"
        for folder in FOLDERS
        for p in (REPO_ROOT / folder / "mipart").iterdir()
        if p.is_dir() and not p.name.startswith((".", "_"))
    }


def config() -> dict[str, object]:
    return dict(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"])


def test_every_package_in_the_tree_is_a_root_package() -> None:
    roots = config()["root_packages"]
    assert isinstance(roots, list)
    assert sorted(roots) == sorted(packages_in_tree())
    assert len(roots) == len(set(roots))


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(tree / f) for f in FOLDERS)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=False,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source folders, which the linter reads instead of the installed tree."""
    copy = tmp_path_factory.mktemp("tree")
    for folder in FOLDERS:
        shutil.copytree(
            REPO_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO_ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_copy_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


# (file in the copy, the import added to it, words of the contract it must break)
FORBIDDEN = [
    pytest.param(
        "domain/mipart/geometry/_quantity.py",
        "import mipart.runtime.logs",
        "Domain code and the contract are pure",
        id="domain-imports-logging",
    ),
    pytest.param(
        "domain/mipart/placement/_choice.py",
        "import mipart.planner",
        "The floor plan",
        id="placement-imports-planner",
    ),
    pytest.param(
        "daemon/mipart/agent/partitions/errors.py",
        "import mipart.kubelet.deviceplugin.v1beta1.api_pb2",
        "The partition manager and the hardware port know nothing",
        id="partition-manager-imports-kubelet-stubs",
    ),
    pytest.param(
        "daemon/mipart/agent/partitions/store.py",
        "import mipart.agent.server.service",
        "The agent's layers",
        id="agent-layers-upwards",
    ),
    pytest.param(
        "extender/mipart/controller/budgets.py",
        "import mipart.placement._choice",
        "Private modules",
        id="private-module-from-outside",
    ),
    pytest.param(
        "daemon/mipart/smi/render.py",
        "import mipart.cluster.annotations",
        "The node side never imports the cluster side",
        id="node-side-imports-cluster-side",
    ),
    pytest.param(
        "extender/mipart/webhook/mutate.py",
        "import mipart.controller.budgets",
        "The floor plan",
        id="one-process-imports-another",
    ),
    pytest.param(
        "extender/mipart/cluster/capacity.py",
        "import amdsmi",
        "Only the amdsmi adapter loads amdsmi",
        id="cluster-side-loads-amdsmi",
    ),
    pytest.param(
        "daemon/mipart/launcher/startup.py",
        "import kubernetes",
        "gRPC clients of the daemon",
        id="launcher-imports-kubernetes",
    ),
]


@pytest.mark.parametrize(("module", "statement", "contract"), FORBIDDEN)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, statement: str, contract: str
) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(original + f"\n{statement}  # noqa\n")
    try:
        result = lint(tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0, f"{statement} in {module} kept every contract"
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    # Contract names wrap in the summary; the full name heads its section below it.
    assert contract in result.stdout.split("Broken contracts", 1)[-1], result.stdout
    assert broken, result.stdout
