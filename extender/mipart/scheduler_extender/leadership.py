"""Whether this extender may answer: its cache is warm, and its own kube-scheduler (the
sidecar in the same pod) holds the scheduler's leader Lease.

The extender does not run an election of its own: only the leading kube-scheduler calls an
extender, and it calls the one beside it. Following that scheduler's Lease keeps the two in
step (a standby's extender refuses, so a split brain cannot bind through two caches), and a
standby keeps its informers running, so its cache is warm when its scheduler takes over.
"""

from __future__ import annotations

import threading
import time

import structlog

from mipart.cluster.view import ClusterState
from mipart.kube.api import KubeApi, KubeError

log = structlog.get_logger(__name__)


def held_by(holder: str | None, host: str) -> bool:
    """Whether a kube-scheduler Lease's holderIdentity is the scheduler on ``host``: client-go
    leader election names a holder ``<host name>_<uuid>``. A bare prefix match would take
    ``mipart-scheduler-1`` for ``mipart-scheduler-10_...`` and let a standby answer."""
    return holder is not None and holder.split("_", 1)[0] == host


class Leadership:
    def __init__(
        self,
        api: KubeApi,
        cluster: ClusterState,
        *,
        lease: str | None,
        identity_prefix: str,
        poll_s: float = 2.0,
    ) -> None:
        self._api = api
        self._cluster = cluster
        self._lease = lease  # "namespace/name", or None to follow no lease (single replica)
        self._prefix = identity_prefix
        self._poll_s = poll_s
        self._holder: str | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def refusal(self) -> str | None:
        """None if this extender may answer now, else why not (sent back as the Error)."""
        if not self._cluster.synced:
            return "mipart extender is starting: its cache of GPUNodes and pods is not warm yet"
        if self._lease is None:
            return None
        holder = self._current_holder()
        if not held_by(holder, self._prefix):
            return (
                f"mipart extender {self._prefix!r} is a standby: lease {self._lease} is held by "
                f"{holder!r}"
            )
        return None

    def _current_holder(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked < self._poll_s:
                return self._holder
            namespace, name = self._lease.split("/", 1) if self._lease else ("", "")
            try:
                lease = self._api.get(
                    f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
                )
                holder = (lease.get("spec") or {}).get("holderIdentity")
            except (KubeError, OSError) as err:
                log.warning("lease.unreadable", lease=self._lease, error=str(err))
                holder = None
            if holder != self._holder:
                log.info("lease.holder", lease=self._lease, holder=holder)
            self._holder, self._checked = holder, time.monotonic()
            return holder
