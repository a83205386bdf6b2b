"""``mipart-controller``: releases pods held by the ``mipart.io/queue`` scheduling gate in QoS
order (latency, standard, batch; FIFO with aging inside a class), only when the placement
engine finds room for them, at a bounded rate; preempts lower classes for latency pods; and
re-partitions idle GPUs (GPUNode.spec) for what waits. Its state is in the API (the pods'
gates, the GPUNodes' spec and change times), so any replica can carry on where another
stopped: the replicas elect a leader on a Lease (mipart.kube.leaderelection, docs/ha.md) and
only the leader acts; the others keep their caches warm to take over."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from mipart.cluster.reporter import EventReporter
from mipart.cluster.view import ClusterState
from mipart.contract.resources import CONTROLLER_COMPONENT
from mipart.controller.releaser import DEFAULT_HOLD_S, Releaser, ReleaseRate
from mipart.controller.repartition import Repartitioner
from mipart.kube.api import KubeApi
from mipart.kube.events import post_event
from mipart.kube.leaderelection import FencedApi, LeaderElector, LeaseTiming, parse_lease
from mipart.planner import PlannerPolicy
from mipart.queue import QueuePolicy
from mipart.runtime import logs
from mipart.runtime.signals import on_stop

log = structlog.get_logger("mipart.controller")

DEFAULT_LEASE = "mipart-system/mipart-controller"
# What a replica that lost the Lease exits with, so that Kubernetes starts it again as a
# standby (client-go's OnStoppedLeading -> exit).
EXIT_LOST_LEADERSHIP = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mipart-controller",
        description=(
            "Release pods waiting behind the mipart.io/queue scheduling gate (added by the "
            'webhook to pods annotated mipart.io/queue: "true") in QoS order, when they fit.'
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, help="default: the pod's service account")
    p.add_argument(
        "--scheduler-name", default="mipart-scheduler", help="the profile of queued pods"
    )
    p.add_argument(
        "--release-rate", type=float, default=20.0, help="pods released per second, at most"
    )
    p.add_argument("--release-burst", type=int, default=20, help="pods released at once, at most")
    p.add_argument(
        "--bypass-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a pod that has waited this long is no longer passed by later pods that fit",
    )
    p.add_argument(
        "--retry-refused-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a pod whose eviction a PodDisruptionBudget refused is not chosen again for this long",
    )
    p.add_argument(
        "--repartition",
        choices=["on", "off"],
        default="on",
        help="let the planner change idle GPUs' modes (GPUNode.spec) for what waits",
    )
    p.add_argument(
        "--plan-settle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="demand younger than this causes no re-partition",
    )
    p.add_argument(
        "--plan-cooldown",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a GPU that changed waits this long before it changes again",
    )
    p.add_argument(
        "--plan-max-changing",
        type=int,
        default=8,
        help="GPUs re-partitioned at once in the whole cluster, at most",
    )
    p.add_argument(
        "--plan-aging",
        type=float,
        default=PlannerPolicy().aging_s,
        metavar="SECONDS",
        help="within its QoS class the planner places the largest pods first until a pod has "
        "waited this long; from then on it goes first, oldest first ('inf': largest first "
        "always, which packs more memory but bounds no wait; docs/planner.md)",
    )
    p.add_argument(
        "--plan-hold",
        type=float,
        default=DEFAULT_HOLD_S,
        metavar="SECONDS",
        help="a released pod is held this long to the partitions the planner counted it on "
        "(mipart.io/planned-partitions): the extender binds it there or nowhere; after that, "
        "to any partition of its planned mode",
    )
    p.add_argument(
        "--defragment",
        choices=["on", "off"],
        default="off",
        help="let the planner evict the batch pods of a GPU they hold at most half of, when "
        "waiting latency or standard pods could use the GPU whole (PodDisruptionBudgets "
        "apply; Events on the GPUNode and the pods; docs/planner.md)",
    )
    p.add_argument(
        "--metrics-address",
        default="127.0.0.1:9402",
        help="host:port for Prometheus metrics, or 'off'",
    )
    p.add_argument("--stale-after", type=float, default=60.0, help="GPUNode heartbeat age limit")
    timing = LeaseTiming()
    p.add_argument(
        "--leader-elect",
        choices=["on", "off"],
        default="on",
        help="elect a leader among the replicas on a Lease; only the leader acts (off: this "
        "process acts at once and alone; never run two like that)",
    )
    p.add_argument(
        "--leader-elect-lease",
        default=DEFAULT_LEASE,
        metavar="NAMESPACE/NAME",
        help="the coordination.k8s.io Lease the replicas elect their leader on",
    )
    p.add_argument(
        "--leader-elect-lease-duration",
        type=int,
        default=timing.lease_duration_s,
        metavar="SECONDS",
        help="a standby takes the Lease over once its holder has not renewed it for this long",
    )
    p.add_argument(
        "--leader-elect-renew-deadline",
        type=float,
        default=timing.renew_deadline_s,
        metavar="SECONDS",
        help="the leader stops acting (and exits) when it has not renewed the Lease for this "
        "long; less than the lease duration, so that it stops before anyone takes over",
    )
    p.add_argument(
        "--leader-elect-retry-period",
        type=float,
        default=timing.retry_period_s,
        metavar="SECONDS",
        help="how often the leader renews the Lease and a standby tries to take it",
    )
    logs.add_arguments(p)
    return p


def _election_problems(args: argparse.Namespace) -> list[str]:
    problems = [
        f"{flag}: must be greater than 0"
        for flag, value in (
            ("--leader-elect-lease-duration", args.leader_elect_lease_duration),
            ("--leader-elect-renew-deadline", args.leader_elect_renew_deadline),
            ("--leader-elect-retry-period", args.leader_elect_retry_period),
        )
        if not value > 0  # NaN too
    ]
    if problems:
        return problems
    if not args.leader_elect_renew_deadline < args.leader_elect_lease_duration:
        problems.append(
            "--leader-elect-renew-deadline: must be less than --leader-elect-lease-duration "
            f"({args.leader_elect_renew_deadline:g} >= {args.leader_elect_lease_duration}): "
            "a leader must stop before a standby may take over"
        )
    if not args.leader_elect_retry_period < args.leader_elect_renew_deadline:
        problems.append(
            "--leader-elect-retry-period: must be less than --leader-elect-renew-deadline "
            f"({args.leader_elect_retry_period:g} >= {args.leader_elect_renew_deadline:g}): "
            "the leader renews every retry period"
        )
    try:
        parse_lease(args.leader_elect_lease)
    except ValueError as err:
        problems.append(f"--leader-elect-lease: {err}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = flag_problems(args)
    if problems:
        print(f"mipart-controller: {'; '.join(problems)}", file=sys.stderr)
        return 2
    logs.configure_from(args)
    api = KubeApi.connect(args.kubeconfig)
    # Unique among the candidates: the pod's name in a cluster; a process of its own here.
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    registry = CollectorRegistry()
    leading = Gauge(
        "mipart_controller_leader",
        "1 while this replica leads (releases, plans, evicts), 0 while it stands by",
        registry=registry,
    )
    elector = _elector(args, api, identity)
    # What acts for the leader writes through `acting`: with an election, every write is
    # refused before it is sent unless this replica leads and renewed the Lease within the
    # renew deadline. The caches read through `api`.
    acting = api if elector is None else FencedApi(api, elector.is_leader)
    state = ClusterState(api, scheduler_name=args.scheduler_name, stale_after_s=args.stale_after)
    loops = _loops(args, acting, state, registry, identity)
    if args.metrics_address != "off":
        host, _, port = args.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    # A standby keeps its caches warm too, so that it acts at once when it takes over; it runs
    # for leadership only once they are, so that a cold replica does not win the Lease.
    state.start()
    if not state.wait_synced(60):
        log.warning("controller.not_synced", waited_s=60)
    _serve(args, elector, loops, acting, leading)
    state.stop()
    return 0


def _serve(
    args: argparse.Namespace,
    elector: LeaderElector | None,
    loops: list[Releaser | Repartitioner],
    acting: KubeApi,
    leading: Gauge,
) -> None:
    """Wait for the Lease (with an election), act until SIGTERM, then stop acting and give
    the Lease up."""
    stopping = threading.Event()
    wake = threading.Event()

    def stop() -> None:
        stopping.set()
        wake.set()

    on_stop(stop)
    if elector is not None:
        log.info("controller.standby", lease=elector.lease, identity=elector.identity)
        elector.start(on_started=wake.set, on_stopped=lambda: _step_down(elector, leading))
        while not (stopping.is_set() or elector.is_leader()):
            wake.wait(1.0)
            wake.clear()
    started = not stopping.is_set()
    if started:
        leading.set(1)
        if elector is not None:
            _announce(acting, elector)
        for loop in loops:
            loop.start()
        log.info("controller.serving", leader_elect=args.leader_elect,
                 rate=args.release_rate, burst=args.release_burst)  # fmt: skip
        stopping.wait()
    # Stop acting first; only then give the Lease up, so that the standby that takes it at
    # once never acts beside a round of ours still running.
    stopped = [loop.stop() for loop in loops] if started else []
    if elector is not None:
        elector.stop()
        if all(stopped):
            elector.release()
        else:
            log.warning("controller.lease_kept", why="a round did not end; the lease runs out")
    leading.set(0)


def _step_down(elector: LeaderElector, leading: Gauge) -> None:
    """On the elector's thread, once this replica lost the Lease.

    The Releaser and the Repartitioner cannot be started again once stopped (their loops are
    one thread each), and keep what they learnt in memory (promises, tokens, Events said). So a
    replica that lost the Lease does what client-go's OnStoppedLeading usually does: it exits,
    now, without finishing a round, and Kubernetes starts it afresh as a standby that rebuilds
    from the API, like any restarted controller. Its writes have been refused since the renew
    deadline passed (FencedApi), so nothing it still does reaches the API.
    """
    leading.set(0)
    log.error("controller.lost_leadership", lease=elector.lease, identity=elector.identity,
              exit_code=EXIT_LOST_LEADERSHIP)  # fmt: skip
    sys.stderr.flush()
    os._exit(EXIT_LOST_LEADERSHIP)


def flag_problems(args: argparse.Namespace) -> list[str]:
    """What main() refuses before it connects, each naming its flag."""
    problems = [
        f"{flag}: must be greater than 0"
        for flag, value in (
            ("--release-rate", args.release_rate),
            ("--release-burst", args.release_burst),
            ("--bypass-after", args.bypass_after),
            ("--retry-refused-after", args.retry_refused_after),
            ("--plan-max-changing", args.plan_max_changing),
            ("--plan-hold", args.plan_hold),
            ("--plan-aging", args.plan_aging),
        )
        if not value > 0  # NaN too
    ]
    return problems + _election_problems(args)


def _elector(args: argparse.Namespace, api: KubeApi, identity: str) -> LeaderElector | None:
    if args.leader_elect == "off":
        return None
    namespace, name = parse_lease(args.leader_elect_lease)
    return LeaderElector(
        api,
        namespace=namespace,
        name=name,
        identity=identity,
        timing=LeaseTiming(
            lease_duration_s=args.leader_elect_lease_duration,
            renew_deadline_s=args.leader_elect_renew_deadline,
            retry_period_s=args.leader_elect_retry_period,
        ),
    )


def _loops(
    args: argparse.Namespace,
    api: KubeApi,
    state: ClusterState,
    registry: CollectorRegistry,
    identity: str,
) -> list[Releaser | Repartitioner]:
    """What acts, writing through ``api``: the queue's Releaser and, unless --repartition
    off, the Repartitioner (the planner's loop, whose admissions the queue follows)."""
    events = EventReporter(api, component=CONTROLLER_COMPONENT, instance=identity)
    repartitioner = None
    if args.repartition == "on":
        repartitioner = Repartitioner(
            api,
            state,
            registry,
            policy=PlannerPolicy(
                settle_s=args.plan_settle,
                cooldown_s=args.plan_cooldown,
                max_changing=args.plan_max_changing,
                aging_s=args.plan_aging,
                defragment=args.defragment == "on",
            ),
            stale_after_s=args.stale_after,
            identity=identity,
            events=events,
            retry_refused_s=args.retry_refused_after,
        )
    releaser = Releaser(
        api,
        state,
        events,
        registry,
        rate=ReleaseRate(args.release_rate, args.release_burst),
        policy=QueuePolicy(bypass_after_s=args.bypass_after),
        retry_refused_s=args.retry_refused_after,
        # The queue follows the planner's admissions while it plans.
        admissions=None if repartitioner is None else repartitioner.admissions,
        hold_s=args.plan_hold,
    )
    return [releaser] if repartitioner is None else [releaser, repartitioner]


def _announce(api: KubeApi, elector: LeaderElector) -> None:
    """An Event on the Lease, as client-go's election writes one: who leads now."""
    post_event(
        api,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": elector.name,
            "namespace": elector.namespace,
        },
        namespace=elector.namespace,
        reason="LeaderElection",
        note=f"{elector.identity} became leader",
        warning=False,
        controller=CONTROLLER_COMPONENT,
        instance=elector.identity,
        action="Lead",
    )


if __name__ == "__main__":
    sys.exit(main())
