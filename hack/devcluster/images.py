"""Container images for the real node, written as OCI image-layout archives without a registry
or an image builder: one uncompressed layer, a config, a manifest and an index, as the OCI image
spec lays them out (https://github.com/opencontainers/image-spec/blob/main/image-layout.md).

`ctr images import` reads such a tar; the image's name comes from the index's
`io.containerd.image.name` annotation (containerd's core/images/archive/importer.go).
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.devcluster.binaries import REPO_ROOT, Binaries

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
INDEX = "application/vnd.oci.image.index.v1+json"
# Where Debian's busybox-static puts its binary.
BUSYBOX = Path("/bin/busybox")
# The busybox image's name. Pods name it with imagePullPolicy: Never; nothing is pulled.
BUSYBOX_IMAGE = "mipart.test/busybox:1"
# Builds mipart's own image from the Containerfile (docs/image.md).
BUILD_IMAGE = REPO_ROOT / "hack" / "build-image"
# How long a cold build may take: the Debian base, the pip installs, the emulator.
BUILD_TIMEOUT_S = 1500


@dataclass(frozen=True)
class Image:
    name: str
    archive: Path


@dataclass(frozen=True)
class ProductImages:
    """mipart's images as hack/build-image left them: the podman configuration it used (its
    image store), the production and the emulated image's names, and the archive of both,
    when one was asked for."""

    env: dict[str, str]
    image: str
    emulated: str
    archive: Path | None = None


def build_product_images(archive: Path | None = None) -> ProductImages:
    """Build (or find in the layer cache) mipart's images with hack/build-image; with archive,
    also write both to that docker-archive, for `ctr images import`. Needs root. The build's
    progress goes to stderr."""
    argv = [str(BUILD_IMAGE), *(["--archive", str(archive)] if archive else [])]
    subprocess.run(argv, check=True, stdout=sys.stderr, timeout=BUILD_TIMEOUT_S)
    printed = subprocess.run(
        [str(BUILD_IMAGE), "--print-env"], check=True, capture_output=True, text=True
    ).stdout
    env = dict(line.split("=", 1) for line in printed.splitlines())
    return ProductImages(
        env={k: env[k] for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")},
        image=env["MIPART_IMAGE"],
        emulated=env["MIPART_IMAGE_EMULATED"],
        archive=archive,
    )


def go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_archive(
    path: Path,
    name: str,
    files: Mapping[str, Path],
    *,
    symlinks: Mapping[str, str] | None = None,
    config: Mapping[str, Any],
) -> Image:
    """An OCI image-layout tar at path holding one image named name: files (path in the image
    -> file on the host, kept executable) and symlinks (path -> target) in one layer, and the
    image config's `config` part (Entrypoint, User, Env...)."""
    layer = _layer(files, symlinks or {})
    diff_id = _digest(layer)
    image_config = {
        "architecture": go_arch(),
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "hack/devcluster/images.py"}],
    }
    config_blob = _json(image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _digest(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": LAYER, "digest": diff_id, "size": len(layer)}],
    }
    manifest_blob = _json(manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": _digest(manifest_blob),
                "size": len(manifest_blob),
                "platform": {"architecture": go_arch(), "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as out:
        _add(out, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(out, "index.json", _json(index))
        for blob in (layer, config_blob, manifest_blob):
            _add(out, "blobs/sha256/" + _digest(blob).removeprefix("sha256:"), blob)
    return Image(name=name, archive=path)


def pause_image_name(binaries: Binaries) -> str:
    """The pause image containerd's CRI plugin pins and starts every pod's pause container
    from, as its default configuration (`containerd config default`) names it: the image is
    imported under that name, so that containerd never tries to pull it and never removes it."""
    default = subprocess.run(
        [binaries("containerd"), "config", "default"], capture_output=True, text=True, check=True
    ).stdout
    pinned = tomllib.loads(default)["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]
    (name,) = pinned.values()
    return str(name)


def pause_image(binaries: Binaries, directory: Path) -> Image:
    """The pause image, as Kubernetes' build/pause/Dockerfile makes it: /pause, run as
    65535:65535, from the pause program hack/build-k8s.sh compiled from Kubernetes' pause.c."""
    return write_archive(
        directory / "pause.tar",
        pause_image_name(binaries),
        {"pause": binaries.bin_dir.parent / "share" / "pause"},
        config={"Entrypoint": ["/pause"], "User": "65535:65535"},
    )


def busybox_image(directory: Path, busybox: Path = BUSYBOX) -> Image:
    """A shell image: Debian's static busybox as /bin/busybox, every applet it lists linked
    to it in /bin (sh, env, ls, cat, sleep...)."""
    if not busybox.exists():
        raise FileNotFoundError(
            f"{busybox} is missing: the real node's test image needs Debian's busybox-static "
            "(hack/build-k8s.sh installs it when run as root)"
        )
    listed = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    links = {f"bin/{applet}": "busybox" for applet in listed if applet != "busybox"}
    return write_archive(
        directory / "busybox.tar",
        BUSYBOX_IMAGE,
        {"bin/busybox": busybox},
        symlinks=links,
        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
    )


def _layer(files: Mapping[str, Path], symlinks: Mapping[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        dirs = sorted(
            {str(parent) for p in [*files, *symlinks] for parent in Path(p).parents} - {"."}
        )
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(info)
        for inside, source in sorted(files.items()):
            data = source.read_bytes()
            info = tarfile.TarInfo(inside)
            info.size, info.mode = len(data), 0o755
            layer.addfile(info, io.BytesIO(data))
        for inside, target in sorted(symlinks.items()):
            info = tarfile.TarInfo(inside)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            layer.addfile(info)
    return buffer.getvalue()


def _add(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
