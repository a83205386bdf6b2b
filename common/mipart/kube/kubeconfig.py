"""Where a command a person runs finds its credentials: where kubectl finds them.

The daemons and the cluster components are told theirs (``--kubeconfig``, or the pod's
service account: ``KubeApi.connect``). A command run from a shell (``mipart-queue``) looks
where kubectl looks, in this order:

1. ``--kubeconfig FILE``, which must exist;
2. ``$KUBECONFIG``, a list of files separated by ``os.pathsep``: those that exist are merged
   as kubectl merges them (a cluster, user or context comes from the first file that names
   it; ``current-context`` from the first file that sets one). When it is set, even to files
   that do not exist, ``~/.kube/config`` is not read (kubectl does not read it either);
3. ``~/.kube/config`` (``$HOME``);
4. the pod's service account, inside a pod.

``--context`` picks a context of the kubeconfig instead of its ``current-context``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.config import incluster_config, kube_config
from kubernetes.config.config_exception import ConfigException

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_HOST_ENV = incluster_config.SERVICE_HOST_ENV_NAME
SERVICE_PORT_ENV = incluster_config.SERVICE_PORT_ENV_NAME


class CredentialsError(Exception):
    """No credentials were found, or those found cannot be used: a one-line message that
    says what was tried."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Kubeconfig files (merged in this order) and the context to use in them; no files:
    the pod's service account in ``service_account``."""

    files: tuple[Path, ...]
    context: str | None
    service_account: Path = SERVICE_ACCOUNT
    environ: Mapping[str, str] | None = None

    def describe(self) -> str:
        if not self.files:
            return f"the service account in {self.service_account}"
        names = os.pathsep.join(str(f) for f in self.files)
        return f"context {self.context!r} of {names}"

    def load(self, configuration: Any) -> None:
        """Fill a ``kubernetes.client.Configuration`` from these credentials."""
        try:
            if self.files:
                # The client's merger keeps each entry's own file, so that relative paths
                # (certificate files) resolve against the file that names them, as kubectl's do.
                kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.pathsep.join(str(f) for f in self.files),
                    context=self.context,
                    client_configuration=configuration,
                )
            else:
                incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                    token_filename=str(self.service_account / "token"),
                    cert_filename=str(self.service_account / "ca.crt"),
                    environ=os.environ if self.environ is None else self.environ,
                ).load_and_set(configuration)
        except (ConfigException, OSError, ValueError) as err:
            raise CredentialsError(f"{self.describe()}: {_one_line(err)}") from err


def find_credentials(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account: Path = SERVICE_ACCOUNT,
) -> Credentials:
    """The credentials kubectl would use; CredentialsError naming what was tried when there
    are none. ``environ`` (default ``os.environ``, read now) gives $KUBECONFIG and $HOME."""
    env = os.environ if environ is None else environ
    if kubeconfig is not None:
        path = kubeconfig.expanduser()
        if not path.is_file():
            raise CredentialsError(f"--kubeconfig {kubeconfig}: no such file")
        return _from_files((path,), context, env)
    tried: list[str] = []
    listed = env.get("KUBECONFIG", "")
    if listed:
        files = _existing(listed)
        if files:
            return _from_files(files, context, env)
        missing = "none of its files exists" if os.pathsep in listed else "no such file"
        tried.append(f"$KUBECONFIG={listed}: {missing}")
    else:
        home = Path(env.get("HOME") or Path.home())
        default = home / ".kube" / "config"
        if default.is_file():
            return _from_files((default,), context, env)
        tried.append(f"$KUBECONFIG not set; {default}: no such file")
    in_pod = _service_account_problem(env, service_account)
    if in_pod is None:
        if context is not None:
            raise CredentialsError(
                f"--context {context}: no kubeconfig to find it in ({'; '.join(tried)})"
            )
        return Credentials((), None, service_account, env)
    tried.append(in_pod)
    raise CredentialsError("no Kubernetes credentials: " + "; ".join(tried))


def _existing(listed: str) -> tuple[Path, ...]:
    """The files of a $KUBECONFIG list that exist, each once, in order."""
    seen: list[Path] = []
    for entry in listed.split(os.pathsep):
        if entry:
            path = Path(entry).expanduser()
            if path not in seen and path.is_file():
                seen.append(path)
    return tuple(seen)


def _from_files(
    files: tuple[Path, ...], context: str | None, env: Mapping[str, str]
) -> Credentials:
    """Read the files for their contexts; kubectl's rules: empty files are skipped, the
    first ``current-context`` set wins (the client's merger would take the last)."""
    documents: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise CredentialsError(f"{path}: not a kubeconfig: {_one_line(err)}") from err
        if document is None:
            continue
        if not isinstance(document, dict):
            raise CredentialsError(f"{path}: not a kubeconfig: not a mapping")
        documents.append((path, document))
    names = os.pathsep.join(str(f) for f in files)
    if not documents:
        raise CredentialsError(f"{names}: empty")
    chosen = context or next(
        (current for _, d in documents if (current := d.get("current-context"))), None
    )
    if not chosen:
        raise CredentialsError(f"{names}: no current-context; name one with --context")
    known = {
        c.get("name") for _, d in documents for c in d.get("contexts") or [] if isinstance(c, dict)
    }
    if chosen not in known:
        raise CredentialsError(f"{names}: no context named {chosen!r}")
    return Credentials(tuple(p for p, _ in documents), str(chosen), environ=env)


def _service_account_problem(env: Mapping[str, str], service_account: Path) -> str | None:
    """Why the pod's service account cannot be used; None when it can."""
    if not env.get(SERVICE_HOST_ENV) or not env.get(SERVICE_PORT_ENV):
        return f"not in a pod (${SERVICE_HOST_ENV} not set)"
    token = service_account / "token"
    if not token.is_file():
        return f"no service account token at {token}"
    return None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
