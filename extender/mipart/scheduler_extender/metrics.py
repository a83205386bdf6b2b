"""Prometheus metrics of the extender."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Filter must stay in the low milliseconds: it runs inside kube-scheduler's one scheduling loop.
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ExtenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "mipart_extender_request_seconds",
            "Time to answer an extender verb",
            ["verb"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "mipart_extender_rejections_total",
            "Nodes filtered out, by kind of reason",
            ["reason"],
            registry=r,
        )
        self.bind_conflicts = Counter(
            "mipart_extender_bind_conflicts_total",
            "Binds refused because the chosen room was taken since filter",
            registry=r,
        )
        self.dropped = Counter(
            "mipart_extender_http_dropped_total",
            "Callers the extender's HTTP server gave up on, by reason (idle, head_timeout, "
            "body_timeout, body_budget, connections, write_timeout, reset)",
            ["reason"],
            registry=r,
        )
        self.serving = Gauge(
            "mipart_extender_serving",
            "1 while this extender answers (warm cache, leader)",
            registry=r,
        )
