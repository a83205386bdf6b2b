"""Where a command finds its credentials: kubectl's order (--kubeconfig, $KUBECONFIG merged,
~/.kube/config, the pod's service account), and what it says when there are none. The
daemons' KubeApi.connect keeps its own rule: the file it is given, or the service account."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.config.config_exception import ConfigException

from mipart.kube.api import KubeApi
from mipart.kube.kubeconfig import CredentialsError, find_credentials


def write_kubeconfig(
    path: Path,
    *,
    server: str | None = None,
    context: str = "c",
    current: str | None = "c",
    token: str = "t",
    extra: dict[str, Any] | None = None,
) -> Path:
    """A kubeconfig with one context ``context`` on a cluster at ``server``."""
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    if server is not None:
        document |= {
            "clusters": [{"name": f"{context}-cluster", "cluster": {"server": server}}],
            "users": [{"name": f"{context}-user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": f"{context}-cluster", "user": f"{context}-user"},
                }
            ],
        }
    if current is not None:
        document["current-context"] = current
    document |= extra or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean slate: an empty $HOME, no $KUBECONFIG, not in a pod. Returns $HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return home


def host(kubeconfig: Path | None = None, context: str | None = None) -> str:
    return str(KubeApi.connect_like_kubectl(kubeconfig, context).client.configuration.host)


def test_kubeconfig_flag_wins_over_the_environment_and_home(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    listed = write_kubeconfig(tmp_path / "listed", server="https://listed:6443")
    monkeypatch.setenv("KUBECONFIG", str(listed))
    given = write_kubeconfig(tmp_path / "given", server="https://given:6443")
    assert host(given) == "https://given:6443"


def test_kubeconfig_flag_naming_a_missing_file_is_an_error(env: Path, tmp_path: Path) -> None:
    """kubectl does not fall back when --kubeconfig names nothing, and neither does this."""
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    with pytest.raises(CredentialsError, match=r"--kubeconfig .*/absent: no such file"):
        find_credentials(tmp_path / "absent")


def test_kubeconfig_variable_wins_over_home(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    monkeypatch.setenv(
        "KUBECONFIG", str(write_kubeconfig(tmp_path / "listed", server="https://listed:6443"))
    )
    assert host() == "https://listed:6443"


def test_kubeconfig_list_skips_missing_files_and_merges_the_rest(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first file that sets current-context decides it (kubectl's rule; the client's own
    merger would let the last one win), and a context may use another file's cluster."""
    first = write_kubeconfig(tmp_path / "a", server=None, current="second")
    second = write_kubeconfig(tmp_path / "b", server="https://second:6443", context="second")
    third = write_kubeconfig(
        tmp_path / "c", server="https://third:6443", context="third", current="third"
    )
    monkeypatch.setenv(
        "KUBECONFIG",
        os.pathsep.join([str(tmp_path / "missing"), str(first), "", str(second), str(third)]),
    )
    found = find_credentials()
    assert found.files == (first, second, third)
    assert found.context == "second"
    assert host() == "https://second:6443"
    assert host(context="third") == "https://third:6443"


def test_empty_files_in_the_list_are_skipped(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    real = write_kubeconfig(tmp_path / "real", server="https://real:6443")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(empty), str(real)]))
    assert host() == "https://real:6443"


def test_home_kubeconfig_when_the_variable_is_unset_or_empty(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    assert host() == "https://home:6443"
    monkeypatch.setenv("KUBECONFIG", "")
    assert host() == "https://home:6443"


def test_a_variable_naming_only_missing_files_does_not_fall_back_to_home(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As kubectl: $KUBECONFIG replaces ~/.kube/config, it does not add to it."""
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "gone"))
    with pytest.raises(CredentialsError) as err:
        find_credentials()
    assert f"$KUBECONFIG={tmp_path / 'gone'}: no such file" in str(err.value)


def test_context_flag_picks_another_context_and_must_exist(env: Path, tmp_path: Path) -> None:
    config = write_kubeconfig(
        tmp_path / "k",
        server="https://one:6443",
        context="one",
        current="one",
        extra={},
    )
    document = yaml.safe_load(config.read_text())
    document["clusters"].append({"name": "two-cluster", "cluster": {"server": "https://two:1"}})
    document["contexts"].append(
        {"name": "two", "context": {"cluster": "two-cluster", "user": "one-user"}}
    )
    config.write_text(yaml.safe_dump(document))
    assert host(config) == "https://one:6443"
    assert host(config, "two") == "https://two:1"
    with pytest.raises(CredentialsError, match="no context named 'three'"):
        find_credentials(config, "three")


def test_no_current_context_asks_for_one(env: Path, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "k", server="https://one:6443", current=None)
    with pytest.raises(CredentialsError, match="no current-context; name one with --context"):
        find_credentials(config)


def test_a_broken_file_is_named_in_one_line(env: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("clusters: [\n  - oops: {\n")
    with pytest.raises(CredentialsError) as err:
        find_credentials(broken)
    assert str(err.value).startswith(f"{broken}: not a kubeconfig: ")
    assert "\n" not in str(err.value)


def test_a_kubeconfig_the_client_cannot_load_is_a_credentials_error(
    env: Path, tmp_path: Path
) -> None:
    """A context whose cluster is missing: the client's ConfigException, as one line."""
    config = write_kubeconfig(tmp_path / "k", server="https://one:6443")
    document = yaml.safe_load(config.read_text())
    document["clusters"] = []
    config.write_text(yaml.safe_dump(document))
    with pytest.raises(CredentialsError) as err:
        KubeApi.connect_like_kubectl(config)
    assert str(err.value).startswith(f"context 'c' of {config}: ")
    assert "\n" not in str(err.value)


def in_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("not checked until a request is made")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return account


def test_service_account_last(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    account = in_pod(tmp_path, monkeypatch)
    found = find_credentials(service_account=account)
    assert found.files == ()
    configuration = client.Configuration()
    found.load(configuration)
    assert configuration.host == "https://10.0.0.1:443"
    assert str(configuration.auth_settings()["BearerToken"]["value"]).lower() == "bearer pod-token"
    # A kubeconfig in $HOME comes first, even in a pod (as kubectl).
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    assert find_credentials(service_account=account).files == (env / ".kube" / "config",)


def test_context_without_a_kubeconfig_is_an_error_even_in_a_pod(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = in_pod(tmp_path, monkeypatch)
    with pytest.raises(CredentialsError, match="--context x: no kubeconfig to find it in"):
        find_credentials(context="x", service_account=account)


def test_nothing_found_names_everything_tried(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CredentialsError) as err:
        find_credentials(service_account=tmp_path / "none")
    assert str(err.value) == (
        f"no Kubernetes credentials: $KUBECONFIG not set; {env}/.kube/config: no such file; "
        "not in a pod ($KUBERNETES_SERVICE_HOST not set)"
    )
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(CredentialsError, match=f"no service account token at {tmp_path}/none/"):
        find_credentials(service_account=tmp_path / "none")


def test_daemons_keep_their_rule_given_file_or_service_account(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KubeApi.connect never reads $KUBECONFIG or ~/.kube/config: a daemon in a pod acts as
    its service account, whatever its image's home holds."""
    write_kubeconfig(env / ".kube" / "config", server="https://home:6443")
    monkeypatch.setenv("KUBECONFIG", str(env / ".kube" / "config"))
    with pytest.raises(ConfigException, match="Service host/port is not set"):
        KubeApi.connect(None)
    given = write_kubeconfig(env / "given", server="https://given:6443")
    assert KubeApi.connect(given).client.configuration.host == "https://given:6443"
