"""Leader election on a coordination.k8s.io/v1 Lease, with the semantics of client-go's
leaderelection package, over KubeApi.

Each candidate tries, every retry period, to take the Lease: it may when nobody holds it
(``holderIdentity`` empty: released), when it holds it already, or when the holder's record
has not changed for ``leaseDurationSeconds`` *as this candidate has watched it*. Expiry is
measured on the candidate's own monotonic clock from when it first saw the record as it is,
never from the ``renewTime`` written in it, so the candidates' wall clocks need not agree.
Every write is a PUT carrying the resourceVersion it read (or a POST that fails if the Lease
exists), so of two candidates that try at once exactly one succeeds: the other's write gets
409 Conflict, and it stays a standby.

The leader renews every retry period. If it has not renewed for the renew deadline, counted
from when it *sent* its last successful renewal, it steps down (``on_stopped``) and
``is_leader()`` turns false at that moment whatever its threads are doing. The renew
deadline is shorter than the lease duration on purpose: a standby sees that renewal no
earlier than it was sent, and waits a whole lease duration from then before it takes over, so
the old leader has stopped acting at least (lease duration - renew deadline) before anyone
else can start. That margin absorbs clock-rate differences, the old leader's own reaction
time and a write already on the wire.

``FencedApi`` puts ``is_leader()`` in front of every write of the code that acts for the
leader: a replica that is not the leader, or is no longer sure to be, sends no write at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
import urllib3

from mipart.kube.api import KubeApi, KubeError

log = structlog.get_logger(__name__)

# The least time a request may take: a renewal with less left before its deadline is not sent.
MIN_REQUEST_S = 0.05
READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """client-go's defaults (kube-scheduler, kube-controller-manager)."""

    # How long a standby waits, after the record last changed, before it takes over; the
    # Lease stores whole seconds.
    lease_duration_s: int = 15
    # How long the leader keeps acting without a successful renewal.
    renew_deadline_s: float = 10.0
    # How often a standby tries to take the Lease, and the leader renews it.
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, "
                f"got {self.retry_period_s}, {self.renew_deadline_s}, {self.lease_duration_s}"
            )


def micro_time(when: datetime) -> str:
    """A metav1.MicroTime, as client-go writes acquireTime and renewTime."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_lease(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); ValueError, saying what is wrong, otherwise."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def leases_path(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class LeaderElector:
    """Runs for leadership on the Lease ``namespace/name`` on a thread of its own (start), or
    one attempt at a time (try_acquire_or_renew) for whoever drives it."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming = LeaseTiming(),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not identity:
            raise ValueError("a leader election candidate needs an identity")
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self._clock = clock
        self._wall = wall
        self._path = f"{leases_path(namespace)}/{name}"
        self._observed: dict[str, Any] | None = None  # the Lease's spec as last seen
        self._observed_at = 0.0  # clock() when it was first seen so
        self._renewed_at: float | None = None  # clock() when our last good write was sent
        self._leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def holder(self) -> str | None:
        """Who held the Lease when this candidate last read or wrote it ("" once released)."""
        return None if self._observed is None else str(self._observed.get("holderIdentity") or "")

    def is_leader(self) -> bool:
        """True while this candidate leads and its last successful renewal was sent less
        than the renew deadline ago: false from that moment on, even before the elector's
        own thread notices."""
        renewed = self._renewed_at
        return (
            self._leading
            and renewed is not None
            and self._clock() - renewed < self.timing.renew_deadline_s
        )

    # -- one attempt ---------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """Read the Lease and, if it is ours or free or expired, write ourselves into it.
        True if the write succeeded: this candidate leads until ``renewed_at + renew
        deadline`` at least."""
        sent = self._clock()
        deadline = (
            self._renewed_at + self.timing.renew_deadline_s
            if self._leading and self._renewed_at is not None
            else sent + self.timing.renew_deadline_s
        )
        now = micro_time(self._wall())
        try:
            lease = self._request("GET", deadline)
        except KubeError as err:
            if err.status != 404:
                log.warning("leader.lease_unreadable", lease=self.lease, error=str(err))
                return False
            return self._create(sent, deadline, now)
        except OSError as err:
            log.warning("leader.lease_unreadable", lease=self.lease, error=str(err))
            return False
        old = lease.get("spec") or {}
        self._observe(old)
        holder = old.get("holderIdentity") or ""
        ours = holder == self.identity
        if holder and not ours and not self._expired(old):
            self._leading = False  # if it led: someone took the Lease, and may act already
            return False
        spec = {
            **old,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.timing.lease_duration_s,
            "renewTime": now,
            "acquireTime": old.get("acquireTime") if ours and old.get("acquireTime") else now,
            "leaseTransitions": int(old.get("leaseTransitions") or 0) + (0 if ours else 1),
        }
        metadata = {k: v for k, v in lease["metadata"].items() if k != "managedFields"}
        try:
            # The resourceVersion read above: a write by anyone since then makes this a 409.
            self._request("PUT", deadline, body={**lease, "metadata": metadata, "spec": spec})
        except KubeError as err:
            level = log.info if err.status == 409 else log.warning
            level("leader.write_refused", lease=self.lease, status=err.status, error=err.message)
            return False
        except OSError as err:
            log.warning("leader.write_failed", lease=self.lease, error=str(err))
            return False
        if not self._leading:
            log.info(
                "leader.acquired",
                lease=self.lease,
                identity=self.identity,
                previous=holder or None,
                transitions=spec["leaseTransitions"],
            )
        self._wrote(spec, sent)
        return True

    def _create(self, sent: float, deadline: float, now: str) -> bool:
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.timing.lease_duration_s,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            self._request("POST", deadline, body=body, path=leases_path(self.namespace))
        except KubeError as err:  # 409 AlreadyExists: another candidate created it first
            level = log.info if err.status == 409 else log.warning
            level("leader.create_refused", lease=self.lease, status=err.status, error=err.message)
            return False
        except OSError as err:
            log.warning("leader.create_failed", lease=self.lease, error=str(err))
            return False
        log.info("leader.acquired", lease=self.lease, identity=self.identity, created=True)
        self._wrote(spec, sent)
        return True

    def release(self) -> bool:
        """Give the Lease up, if it is still ours, so that a standby takes over at its next
        retry instead of after a lease duration. Call it only once nothing acts for this
        candidate any more (after stop()). Whether it was released."""
        if self._renewed_at is None:
            return False
        self._leading = False
        deadline = self._clock() + self.timing.renew_deadline_s
        try:
            lease = self._request("GET", deadline)
            old = lease.get("spec") or {}
            if old.get("holderIdentity") != self.identity:
                return False
            now = micro_time(self._wall())
            # As client-go releases: nobody holds it, and it lasted a second.
            spec = {
                **old,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            metadata = {k: v for k, v in lease["metadata"].items() if k != "managedFields"}
            self._request("PUT", deadline, body={**lease, "metadata": metadata, "spec": spec})
        except (KubeError, OSError) as err:
            log.warning("leader.release_failed", lease=self.lease, error=str(err))
            return False
        self._renewed_at = None
        log.info("leader.released", lease=self.lease, identity=self.identity)
        return True

    # -- the loop ------------------------------------------------------------------------

    def start(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        """Run for leadership on a thread: ``on_started`` once this candidate leads (return
        at once: renewals wait for it), ``on_stopped`` when it lost the Lease (is_leader()
        is false by then: since the renew deadline, or since it saw another holder)."""
        self._thread = threading.Thread(
            target=self._run, args=(on_started, on_stopped), name="leader-election", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the loop (the Lease stays as it is: release() gives it up)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timing.renew_deadline_s + 1)

    def _run(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        log.info("leader.candidate", lease=self.lease, identity=self.identity)
        # Standby: no jitter between attempts, so that a takeover comes at most one retry
        # period after the lease expired (client-go's jitter spreads many candidates; here
        # there are a few replicas).
        while not self.try_acquire_or_renew():
            if self._stop.wait(self.timing.retry_period_s):
                return
        if self._stop.is_set():
            return
        on_started()
        while not self._stop.wait(self.timing.retry_period_s):
            if not self._renew():
                log.error(
                    "leader.lost",
                    lease=self.lease,
                    identity=self.identity,
                    holder=self.holder,
                    renew_deadline_s=self.timing.renew_deadline_s,
                )
                self._leading = False
                on_stopped()
                return

    def _renew(self) -> bool:
        """Renew, retrying every retry period, until it works (True), the renew deadline
        passes or another holder shows in the Lease (False), or stop() is called (True: the
        one stopping decides what becomes of the Lease)."""
        while True:
            if self.try_acquire_or_renew():
                return True
            holder = self.holder
            if holder and holder != self.identity:
                return False  # someone took it: they may be acting already
            assert self._renewed_at is not None
            left = self._renewed_at + self.timing.renew_deadline_s - self._clock()
            if left <= MIN_REQUEST_S:
                return False
            if self._stop.wait(min(self.timing.retry_period_s, left - MIN_REQUEST_S)):
                return True

    # -- helpers -------------------------------------------------------------------------

    def _request(
        self, method: str, deadline: float, *, body: Any = None, path: str | None = None
    ) -> Any:
        """One request that gives up by ``deadline`` (a renewal that comes back after the
        renew deadline is worth nothing)."""
        left = deadline - self._clock()
        if left < MIN_REQUEST_S:
            raise TimeoutError(f"{method} {path or self._path}: renew deadline passed")
        try:
            return self._api.request(method, path or self._path, body=body, timeout=left)
        except urllib3.exceptions.HTTPError as err:  # a read timeout while reading the body
            raise ConnectionError(f"{method} {path or self._path}: {err}") from err

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = spec
            self._observed_at = self._clock()

    def _expired(self, spec: dict[str, Any]) -> bool:
        seconds = spec.get("leaseDurationSeconds") or self.timing.lease_duration_s
        return self._clock() >= self._observed_at + float(seconds)

    def _wrote(self, spec: dict[str, Any], sent: float) -> None:
        self._observed = spec
        self._observed_at = self._clock()
        self._renewed_at = sent
        self._leading = True


class NotLeader(ConnectionError):
    """A write refused before it was sent: this replica does not lead (any more)."""


class FencedApi(KubeApi):
    """The same connection pool as ``api``, sending a write (anything but GET) only while
    ``allowed()``: give it to the code that acts for the leader, never to the elector."""

    def __init__(self, api: KubeApi, allowed: Callable[[], bool]) -> None:
        super().__init__(api.client)
        self._allowed = allowed

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
        if method not in READS and not self._allowed():
            raise NotLeader(f"{method} {path}: refused, this replica is not the leader")
        return super()._send(method, path, query, body, content_type=content_type, timeout=timeout)
