"""Fixtures for the image tests: the images hack/build-image builds, and podman to run them.

The build itself is a session fixture: a cold one (tools from apt, the Debian base, the pip
installs) takes a few minutes; a warm one reuses the layer cache under ~/.cache/mipart.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from hack.devcluster import images

# What the test summary reports: each image's tag and size in bytes.
SIZES = pytest.StashKey[dict[str, int]]()


@dataclass(frozen=True)
class Podman:
    """podman with the configuration hack/build-image built with (its image store under the
    cache, hack/containers/containers.conf), and the two images it tagged."""

    env: dict[str, str]
    image: str
    emulated: str

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n"
                f"{result.stderr}"
            )
        return result

    def run(self, image: str, *command: str, options: Sequence[str] = ()) -> str:
        """The output of `command` in a fresh container of `image`, removed afterwards."""
        base = ["run", "--rm", "--runtime", "runc", "--network", "none", *options]
        return self(*base, image, *command).stdout


@pytest.fixture(scope="session")
def podman() -> Podman:
    """The images, built (or found in the layer cache) by hack/build-image."""
    built = images.build_product_images()
    return Podman(env=built.env, image=built.image, emulated=built.emulated)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    sizes = config.stash.get(SIZES, {})
    if sizes:
        terminalreporter.section("mipart image size")
        for tag, size in sizes.items():
            terminalreporter.write_line(
                f"{tag}: {size / 2**20:.0f} MiB ({size} bytes, uncompressed)"
            )
