"""Where the Kubernetes binaries are, building them with hack/build-k8s.sh when missing."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-k8s.sh"


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path

    def __call__(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def kwok_stages(self) -> Path:
        """kwok's node and pod lifecycle stages, copied from the same kwok release."""
        return self.bin_dir.parent / "share" / "kwok-stages.yaml"


def cache_dir() -> Path:
    """Where built things are cached (MIPART_CACHE_DIR, default ~/.cache/mipart): the build
    script's rule, asked of it so that there is one."""
    return Path(_ask("--print-cache-dir"))


def kserve_dir() -> Path:
    """KServe's CRDs (``crd/``, a kustomization) and its ConfigMap, from the module the
    build script built ``kserve-manager`` from."""
    return Path(_ask("--print-kserve-dir"))


def _ask(flag: str) -> str:
    return subprocess.run(
        [str(BUILD_SCRIPT), flag], capture_output=True, text=True, check=True
    ).stdout.strip()


def is_built() -> bool:
    return subprocess.run([str(BUILD_SCRIPT), "--check"], check=False).returncode == 0


def ensure_built() -> Binaries:
    """The cached binaries; a cold cache builds them first (about 10 minutes on 2 cores),
    with the build's progress on stderr (stdout stays for results, like a kubeconfig path)."""
    bin_dir = _ask("--print-bin-dir")
    if not is_built():
        subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
    return Binaries(Path(bin_dir))
