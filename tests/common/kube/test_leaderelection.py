"""The Lease election's state machine against an in-memory Lease endpoint that keeps
resourceVersions as the API server does (a PUT with an old one is a 409, a POST of an existing
Lease is a 409), on clocks the test moves."""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from mipart.kube.api import KubeApi, KubeError
from mipart.kube.leaderelection import (
    FencedApi,
    LeaderElector,
    LeaseTiming,
    NotLeader,
    parse_lease,
)

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease"
TIMING = LeaseTiming(lease_duration_s=4, renew_deadline_s=3.0, retry_period_s=1.0)
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """GET, POST and PUT of one Lease, as KubeApi.request is called."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.lease: dict[str, Any] | None = None
        self._version = 0
        self.down = False
        self.clock = clock
        self.request_takes = 0.0  # seconds each request moves the clock by
        self.before_write: Callable[[], None] | None = None  # runs between a GET and a PUT
        self.writes: list[tuple[str, dict[str, Any]]] = []

    @property
    def api(self) -> KubeApi:
        return cast(KubeApi, self)

    @property
    def spec(self) -> dict[str, Any]:
        assert self.lease is not None
        return cast(dict[str, Any], self.lease["spec"])

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
        assert timeout is not None, "every election request has a deadline"
        assert timeout > 0
        if self.clock is not None:
            self.clock.now += self.request_takes
        if self.down:
            raise ConnectionError(f"{method} {path}: connection refused")
        if method == "GET":
            assert path == PATH
            if self.lease is None:
                raise KubeError(404, "Not Found", '{"message": "leases \\"lease\\" not found"}')
            return copy.deepcopy(self.lease)
        if method == "PUT" and self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        self.writes.append((method, copy.deepcopy(body)))
        if method == "POST":
            assert path == PATH.rsplit("/", 1)[0]
            if self.lease is not None:
                raise KubeError(409, "Conflict", '{"message": "already exists"}')
            return self._store(body)
        assert method == "PUT"
        assert path == PATH
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", '{"message": "the object has been modified"}')
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self._version)
        self.lease = stored
        return copy.deepcopy(stored)


def candidate(
    leases: FakeLeases, identity: str, clock: Clock, wall: datetime | None = None
) -> LeaderElector:
    return LeaderElector(
        leases.api,
        namespace="ns",
        name="lease",
        identity=identity,
        timing=TIMING,
        clock=clock,
        wall=lambda: wall or datetime.now(UTC),
    )


def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    clock, leases = Clock(), FakeLeases()
    a = candidate(leases, "a", clock)
    assert not a.is_leader()
    assert a.try_acquire_or_renew()
    assert a.is_leader()
    spec = leases.spec
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 4
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["acquireTime"])
    assert MICRO_TIME.match(spec["renewTime"])
    assert [method for method, _ in leases.writes] == ["POST"]


def test_renewals_move_renew_time_and_keep_acquire_time_and_transitions() -> None:
    clock, leases = Clock(), FakeLeases()
    times = iter(datetime(2030, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(10))
    a = LeaderElector(leases.api, namespace="ns", name="lease", identity="a", timing=TIMING,
                      clock=clock, wall=lambda: next(times))  # fmt: skip
    assert a.try_acquire_or_renew()
    acquired = leases.spec["acquireTime"]
    clock.now += 1
    assert a.try_acquire_or_renew()
    assert leases.spec["acquireTime"] == acquired == "2030-01-01T00:00:00.000000Z"
    assert leases.spec["renewTime"] == "2030-01-01T00:00:01.000000Z"
    assert leases.spec["leaseTransitions"] == 0
    assert [method for method, _ in leases.writes] == ["POST", "PUT"]
    # The resourceVersion read is the one written back; managedFields are not sent.
    assert leases.writes[1][1]["metadata"]["resourceVersion"] == "1"


def test_a_standby_waits_a_lease_duration_of_silence_on_its_own_clock_then_takes_over() -> None:
    clock_a, clock_b, leases = Clock(), Clock(), FakeLeases()
    a = candidate(leases, "a", clock_a)
    # b's wall clock is decades off and its monotonic clock has another origin: neither
    # matters, b only counts how long it has watched the record stay as it is.
    b = candidate(leases, "b", clock_b, wall=datetime(1990, 1, 1, tzinfo=UTC))
    clock_b.now = 5.0
    assert a.try_acquire_or_renew()
    for _ in range(5):  # a renews every second: b never takes it
        assert not b.try_acquire_or_renew()
        clock_a.now += 1
        clock_b.now += 1
        assert a.try_acquire_or_renew()
    # a stops renewing. b saw the last renewal at its next try, and waits 4 s from then.
    assert not b.try_acquire_or_renew()
    seen = clock_b.now
    clock_b.now = seen + 3.99
    assert not b.try_acquire_or_renew()
    clock_b.now = seen + 4.0
    assert b.try_acquire_or_renew()
    assert b.is_leader()
    assert leases.spec["holderIdentity"] == "b"
    assert leases.spec["leaseTransitions"] == 1
    assert leases.spec["acquireTime"] == leases.spec["renewTime"]
    assert leases.spec["acquireTime"].startswith("1990-")
    # The old leader's next renewal finds b: it is no longer the leader.
    clock_a.now += 1
    assert a.is_leader(), "within its renew deadline, as far as its clock goes"
    assert not a.try_acquire_or_renew()
    assert a.holder == "b"
    assert not a.is_leader()


def test_of_two_standbys_that_try_at_once_exactly_one_takes_the_lease() -> None:
    clock, leases = Clock(), FakeLeases()
    a, b, c = (candidate(leases, name, clock) for name in "abc")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert not c.try_acquire_or_renew()
    clock.now += 4

    # c reads and writes while b is between its read and its write: b's write carries the old
    # resourceVersion and is refused.
    def c_first() -> None:
        assert c.try_acquire_or_renew()

    leases.before_write = c_first
    assert not b.try_acquire_or_renew()
    assert leases.spec["holderIdentity"] == "c"
    assert leases.spec["leaseTransitions"] == 1
    assert c.is_leader()
    assert not b.is_leader()


def test_of_two_candidates_that_create_the_lease_at_once_one_wins() -> None:
    clock, leases = Clock(), FakeLeases()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    leases.lease = None
    # b read "not found" too, then a created it: b's POST is a 409.
    assert a.try_acquire_or_renew()
    created = copy.deepcopy(leases.lease)
    leases.lease = None
    real_request = leases.request

    def request(method: str, path: str, **kwargs: Any) -> Any:
        if method == "POST":
            leases.lease = created
        return real_request(method, path, **kwargs)

    leases.request = request  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew()
    assert not b.is_leader()
    assert leases.spec["holderIdentity"] == "a"


def test_a_leader_that_cannot_renew_stops_leading_at_the_renew_deadline_from_sending() -> None:
    clock = Clock()
    leases = FakeLeases(clock)
    leases.request_takes = 0.4  # each request: the clock moves while it is on the wire
    a = candidate(leases, "a", clock)
    sent = clock.now
    assert a.try_acquire_or_renew()  # a GET (404) and a POST: returns at sent + 0.8
    leases.down = True
    clock.now = sent + TIMING.renew_deadline_s - 0.01
    assert a.is_leader()
    # Counted from when the successful write was sent, not from when its answer came back:
    # a standby may have seen the record from the moment it was written.
    clock.now = sent + TIMING.renew_deadline_s
    assert not a.is_leader()
    # Before any standby can take over: it saw the record no earlier than it was written.
    assert sent + TIMING.renew_deadline_s < sent + TIMING.lease_duration_s


def test_a_request_is_given_only_the_time_left_before_the_renew_deadline() -> None:
    clock, leases = Clock(), FakeLeases()
    a = candidate(leases, "a", clock)
    timeouts: list[float] = []
    real_request = leases.request

    def request(method: str, path: str, **kwargs: Any) -> Any:
        timeouts.append(kwargs["timeout"])
        return real_request(method, path, **kwargs)

    leases.request = request  # type: ignore[method-assign]
    assert a.try_acquire_or_renew()
    clock.now += 2.5
    timeouts.clear()
    assert a.try_acquire_or_renew()
    assert timeouts == [pytest.approx(0.5), pytest.approx(0.5)]
    clock.now += 2.96  # 0.04 s left: not worth a request
    timeouts.clear()
    assert not a.try_acquire_or_renew()
    assert timeouts == []


def test_release_frees_the_lease_for_a_standby_at_once() -> None:
    clock, leases = Clock(), FakeLeases()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert not a.is_leader()
    assert leases.spec["holderIdentity"] == ""
    assert leases.spec["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew()  # no wait: nobody holds it
    assert leases.spec["holderIdentity"] == "b"
    assert leases.spec["leaseTransitions"] == 1


def test_release_leaves_a_lease_someone_else_took_alone() -> None:
    clock, leases = Clock(), FakeLeases()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 4
    assert b.try_acquire_or_renew()
    before = copy.deepcopy(leases.lease)
    assert not a.release()
    assert leases.lease == before
    assert not candidate(leases, "c", clock).release()  # never held it: nothing is sent


def test_a_restarted_candidate_with_the_same_identity_carries_on_as_the_holder() -> None:
    clock, leases = Clock(), FakeLeases()
    assert candidate(leases, "pod-0", clock).try_acquire_or_renew()
    again = candidate(leases, "pod-0", clock)
    assert again.try_acquire_or_renew()
    assert leases.spec["leaseTransitions"] == 0


def test_an_unreachable_api_server_is_not_an_error_for_a_standby() -> None:
    clock, leases = Clock(), FakeLeases()
    leases.down = True
    a = candidate(leases, "a", clock)
    assert not a.try_acquire_or_renew()
    leases.down = False
    assert a.try_acquire_or_renew()


def test_the_loop_calls_back_on_acquiring_and_on_losing_the_lease() -> None:
    leases = FakeLeases()
    timing = LeaseTiming(lease_duration_s=1, renew_deadline_s=0.3, retry_period_s=0.05)
    a = LeaderElector(leases.api, namespace="ns", name="lease", identity="a", timing=timing)
    started, stopped = threading.Event(), threading.Event()
    a.start(on_started=started.set, on_stopped=stopped.set)
    try:
        assert started.wait(5)
        assert a.is_leader()
        renewed = leases.spec["renewTime"]
        time.sleep(0.2)
        assert leases.spec["renewTime"] != renewed, "the leader does not renew"
        leases.down = True
        lost_at = time.monotonic()
        assert stopped.wait(5)
        # It noticed within the renew deadline (and a retry) of its last renewal.
        assert time.monotonic() - lost_at <= timing.renew_deadline_s + timing.retry_period_s
        assert not a.is_leader()
    finally:
        a.stop()


def test_the_loop_steps_down_at_once_when_another_holder_shows() -> None:
    leases = FakeLeases()
    timing = LeaseTiming(lease_duration_s=10, renew_deadline_s=5.0, retry_period_s=0.05)
    a = LeaderElector(leases.api, namespace="ns", name="lease", identity="a", timing=timing)
    started, stopped = threading.Event(), threading.Event()
    a.start(on_started=started.set, on_stopped=stopped.set)
    try:
        assert started.wait(5)
        assert leases.lease is not None
        taken = copy.deepcopy(leases.lease)
        taken["spec"]["holderIdentity"] = "intruder"
        leases.lease = taken
        assert stopped.wait(1), "it waited for its renew deadline"
    finally:
        a.stop()


def test_a_stopped_standby_calls_nothing_back() -> None:
    leases = FakeLeases()
    leases.down = True
    timing = LeaseTiming(lease_duration_s=1, renew_deadline_s=0.3, retry_period_s=0.05)
    a = LeaderElector(leases.api, namespace="ns", name="lease", identity="a", timing=timing)
    called: list[str] = []
    a.start(on_started=lambda: called.append("started"), on_stopped=lambda: called.append("x"))
    time.sleep(0.2)
    a.stop()
    assert called == []
    assert not a.release()


@pytest.mark.parametrize(
    ("retry", "renew", "lease"), [(1.0, 3.0, 3), (3.0, 3.0, 4), (0.0, 3.0, 4), (2.0, 1.0, 4)]
)
def test_timings_out_of_order_are_refused(retry: float, renew: float, lease: int) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseTiming(lease_duration_s=lease, renew_deadline_s=renew, retry_period_s=retry)


@pytest.mark.parametrize("text", ["name", "/name", "ns/", "a/b/c", ""])
def test_a_lease_is_namespace_slash_name(text: str) -> None:
    with pytest.raises(ValueError, match="is not NAMESPACE/NAME"):
        parse_lease(text)
    assert parse_lease("mipart-system/mipart-controller") == ("mipart-system", "mipart-controller")


def test_the_fenced_api_sends_reads_always_and_writes_only_while_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    class Response:
        status = 200

        def read(self) -> bytes:
            return b"{}"

    def send(self: KubeApi, method: str, path: str, *args: Any, **kwargs: Any) -> Response:
        sent.append(method)
        return Response()

    monkeypatch.setattr(KubeApi, "_send", send)
    allowed = [True]
    fenced = FencedApi(KubeApi(object()), lambda: allowed[0])
    fenced.get("/api/v1/pods")
    fenced.json_patch("/api/v1/namespaces/n/pods/p", [])
    allowed[0] = False
    fenced.get("/api/v1/pods")
    writes: list[Callable[[], Any]] = [
        lambda: fenced.json_patch("/api/v1/namespaces/n/pods/p", []),
        lambda: fenced.merge_patch("/apis/mipart.io/v1alpha1/gpunodes/n", {}),
        lambda: fenced.post("/apis/events.k8s.io/v1/namespaces/n/events", {}),
    ]
    for write in writes:
        with pytest.raises(NotLeader, match="not the leader"):
            write()
    assert sent == ["GET", "PATCH", "GET"]
    # Callers that survive a lost connection survive this too.
    assert issubclass(NotLeader, OSError)
