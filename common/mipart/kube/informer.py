"""List-watch caches: the state of the cluster, kept current, rebuilt from the API on start.

Every component rebuilds what it knows this way (docs/extender.md#sources-of-truth): nothing
survives only in a process's memory, so a restarted component converges on what the API server
holds. How list and watch behave: docs/facts-kubernetes.md#list-and-watch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from mipart.kube.api import KubeApi, KubeError

log = structlog.get_logger(__name__)

Handler = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]
"""(key, old, new): new is None on delete, old is None on add."""


def object_key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


class Informer:
    """Lists, then watches, a collection; relists when the watch expires (410 Gone)."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        *,
        name: str,
        handler: Handler | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self._api = api
        self._path = path
        self.name = name
        self._handlers: list[Handler] = [handler] if handler else []
        self._query = {
            k: v
            for k, v in (("fieldSelector", field_selector), ("labelSelector", label_selector))
            if v
        }
        self._lock = threading.RLock()
        self._items: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(key)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self.synced.wait(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self._relist()
                backoff = 0.5
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Expired:
                log.info("informer.relist", informer=self.name, reason="watch expired")
            except (KubeError, OSError, ValueError) as err:
                log.warning("informer.error", informer=self.name, error=str(err))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                log.exception("informer.crashed", informer=self.name)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _relist(self) -> str:
        listing = self._api.request("GET", self._path, query=self._query or None, timeout=120)
        fresh = {object_key(o): o for o in listing.get("items", [])}
        with self._lock:
            old = self._items
            self._items = fresh
        for key, obj in fresh.items():
            if old.get(key) != obj:
                self._emit(key, old.get(key), obj)
        for key in old.keys() - fresh.keys():
            self._emit(key, old[key], None)
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        for event in self._api.watch(self._path, version, self._query):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired
                raise KubeError(int(obj.get("code", 0)), str(obj.get("reason")), str(obj))
            version = str(obj.get("metadata", {}).get("resourceVersion", version))
            if kind == "BOOKMARK":
                continue
            key = object_key(obj)
            with self._lock:
                old = self._items.get(key)
                if kind == "DELETED":
                    self._items.pop(key, None)
                else:
                    self._items[key] = obj
            self._emit(key, old, None if kind == "DELETED" else obj)
            if self._stop.is_set():
                break
        return version

    def _emit(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for handler in self._handlers:
            try:
                handler(key, old, new)
            except Exception:
                log.exception("informer.handler_failed", informer=self.name, key=key)


class _Expired(Exception):
    pass


def wait_all_synced(informers: list[Informer], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(i.wait_synced(max(0.0, deadline - time.monotonic())) for i in informers)
