"""Print the requirements one stage of the image build installs, read from pyproject.toml.

    python3 requirements.py runtime pyproject.toml   what mipart needs to run
    python3 requirements.py build pyproject.toml     what building its wheel needs: the build
                                                     backend and the gRPC stub generators

The Containerfile installs these before it copies the sources, so that the layer holding the
dependencies is rebuilt only when pyproject.toml changes. Standard library only: it runs on
the base image's own python3 (3.11 or later, for tomllib).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# The dev extras that hack/gen-protos runs (protoc and its typed-stub plugin).
STUB_GENERATORS = ("grpcio-tools", "mypy-protobuf")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def requirements(pyproject: dict[str, object], which: str) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    if which == "runtime":
        return list(project["dependencies"])
    if which == "build":
        system = pyproject["build-system"]
        assert isinstance(system, dict)
        dev = project["optional-dependencies"]["dev"]
        return [*system["requires"], *(r for r in dev if _name(r) in STUB_GENERATORS)]
    raise SystemExit(f"requirements.py: unknown set {which!r} (known: runtime, build)")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: requirements.py runtime|build PYPROJECT")
    pyproject = tomllib.loads(Path(sys.argv[2]).read_text())
    print("\n".join(requirements(pyproject, sys.argv[1])))


if __name__ == "__main__":
    main()
