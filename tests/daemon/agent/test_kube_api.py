"""KubeApi's client configuration: what it changes in the official client, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.config import kube_config

from mipart.kube.api import POOL_SIZE, KubeApi


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "the-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_credentials_are_checked_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's hook re-applies the whole configuration before every request (and its
    host setter re-reads the proxy environment): once a second is enough."""
    runs = 0
    original = kube_config.KubeConfigLoader._set_config

    def counting(self: Any, configuration: Any) -> None:
        nonlocal runs
        runs += 1
        original(self, configuration)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(kube_config.KubeConfigLoader, "_set_config", counting)
    clock = [1000.0]
    monkeypatch.setattr("mipart.kube.api.time.monotonic", lambda: clock[0])
    configuration = KubeApi.connect(kubeconfig(tmp_path)).client.configuration
    loaded = runs

    for _ in range(50):
        auth = configuration.auth_settings()
    assert auth["BearerToken"]["value"] == "Bearer the-token"
    assert runs == loaded + 1

    clock[0] += 1.5
    for _ in range(50):
        configuration.auth_settings()
    # Each run of the loader's hook installs it again; the throttle stays in front.
    assert runs == loaded + 2
    assert configuration.connection_pool_maxsize == POOL_SIZE
