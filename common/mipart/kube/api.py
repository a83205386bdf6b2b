"""A small JSON client over the official client's configuration and connection pool."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3
from kubernetes import client, config

from mipart.kube.kubeconfig import find_credentials

POOL_SIZE = 32
# The config loaders' credential hook runs before every request and re-applies the whole
# configuration; setting the host re-reads the proxy settings from the environment, a third
# of the extender's CPU per Binding POST. Credentials are refreshed minutes before they expire
# (kubeconfig: 5 min early; in-cluster: the token file is re-read every minute), so checking
# once a second loses nothing.
CREDENTIAL_CHECK_S = 1.0


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        try:
            self.message = str(json.loads(body).get("message", body))
        except ValueError:
            self.message = body
        super().__init__(f"{status} {reason}: {self.message}")


class KubeApi:
    """GET/POST/PATCH/DELETE and WATCH on API paths, with dicts in and out."""

    def __init__(self, api_client: Any) -> None:
        self.client = api_client

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> KubeApi:
        """For the daemons and the cluster components: the kubeconfig they are given, else the
        pod's service account (nothing else is looked for: a process in a pod that found a
        stray ~/.kube/config would act as someone else)."""
        configuration = client.Configuration()
        if kubeconfig is not None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls._pooled(configuration)

    @classmethod
    def connect_like_kubectl(
        cls, kubeconfig: Path | None = None, context: str | None = None
    ) -> KubeApi:
        """For commands people run: the credentials kubectl would use (mipart.kube.kubeconfig);
        CredentialsError, one line, when there are none or they cannot be loaded."""
        configuration = client.Configuration()
        find_credentials(kubeconfig, context).load(configuration)
        return cls._pooled(configuration)

    @classmethod
    def _pooled(cls, configuration: Any) -> KubeApi:
        # Each watch holds a connection for its lifetime, and the extender POSTs a Binding per
        # pod from as many threads as kube-scheduler binds at once. Past the pool's size
        # (the client's default: 5 per CPU) every request opens a new TLS connection, and the
        # handshakes cost the API server more CPU than the requests.
        configuration.connection_pool_maxsize = POOL_SIZE
        _ThrottledCredentials.install(configuration, CREDENTIAL_CHECK_S)
        return cls(client.ApiClient(configuration))

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = 30,
    ) -> Any:
        response = self._send(method, path, query, body, content_type=content_type, timeout=timeout)
        data = response.read()
        return orjson.loads(data) if data else None

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def json_patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        """RFC 6902: lists can be edited by index, guarded by ``test`` operations."""
        return self.request(
            "PATCH", path, body=operations, content_type="application/json-patch+json"
        )

    def watch(
        self, path: str, resource_version: str, query: dict[str, str], timeout_s: int = 300
    ) -> Iterator[dict[str, Any]]:
        """Watch events from ``resource_version``; ends when the server closes the stream."""
        params = {
            **query,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        raw = self._send("GET", path, params, None, timeout=timeout_s + 30)
        try:
            buffer = b""
            for chunk in raw.stream(64 * 1024, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        # orjson: parsing watch events was a fifth of the extender's CPU.
                        yield orjson.loads(line)
        finally:
            raw.release_conn()

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: Any,
        *,
        content_type: str = "application/json",
        timeout: float | None,
    ) -> urllib3.BaseHTTPResponse:
        """One request on the official client's connection pool (its TLS settings, proxy and
        credentials), without its serialization layers: a Binding POST through them cost
        twice the CPU of the request itself (bodies here are plain dicts, encoded by orjson)."""
        configuration = self.client.configuration
        headers = {"Accept": "application/json"}
        for auth in configuration.auth_settings().values():
            if auth["in"] == "header" and auth["value"]:
                headers[auth["key"]] = auth["value"]
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = orjson.dumps(body)
        url = configuration.host + path + (f"?{urlencode(query)}" if query else "")
        try:
            response: urllib3.BaseHTTPResponse = self.client.rest_client.pool_manager.request(
                method,
                url,
                body=payload,
                headers=headers,
                timeout=urllib3.Timeout(total=timeout),
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as err:
            raise ConnectionError(f"{method} {path}: {err}") from err
        if response.status >= 400:
            raise KubeError(response.status, response.reason or "", response.read().decode())
        return response


class _ThrottledCredentials:
    """Runs the config loader's credential hook at most every ``seconds``. Each run installs
    the loader's hook again (with what it just loaded): adopt it and put this back in front."""

    def __init__(self, hook: Callable[[Any], None], seconds: float) -> None:
        self._hook = hook
        self._seconds = seconds
        self._last = -seconds

    @classmethod
    def install(cls, configuration: Any, seconds: float) -> None:
        hook = getattr(configuration, "refresh_api_key_hook", None)
        if hook is not None:
            configuration.refresh_api_key_hook = cls(hook, seconds)

    def __call__(self, configuration: Any) -> None:
        now = time.monotonic()
        if now - self._last < self._seconds:
            return
        self._last = now
        self._hook(configuration)
        installed = configuration.refresh_api_key_hook
        if installed is not self:
            self._hook = installed
            configuration.refresh_api_key_hook = self
