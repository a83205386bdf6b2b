"""Prometheus metrics of the daemon, fed from published NodeStatus snapshots, operations and
the memory-limit monitor's readings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mipart.agent.partitions.manager import NodeStatus
from mipart.agent.partitions.operations import GpuPhase, OperationEvent
from mipart.sizing import MemoryReading, PodMemory


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.gpu_info = Gauge(
            "mipart_gpu_info",
            "1 for each GPU, labelled with its modes and phase",
            ["gpu", "compute_partition", "memory_partition", "phase"],
            registry=r,
        )
        self.partitions = Gauge(
            "mipart_gpu_partitions", "Compute partitions a GPU has", ["gpu"], registry=r
        )
        self.drained = Gauge("mipart_gpu_drained", "1 if the GPU is drained", ["gpu"], registry=r)
        self.partition_memory = Gauge(
            "mipart_partition_memory_bytes", "Memory of a partition", ["partition"], registry=r
        )
        self.partition_memory_used = Gauge(
            "mipart_partition_memory_used_bytes",
            "VRAM in use on a partition",
            ["partition"],
            registry=r,
        )
        self.temperature = Gauge(
            "mipart_gpu_temperature_celsius", "Hotspot temperature", ["gpu"], registry=r
        )
        self.power = Gauge("mipart_gpu_power_watts", "Socket power", ["gpu"], registry=r)
        self.hardware_errors = Counter(
            "mipart_hardware_read_errors_total", "Failed reads of the GPUs", registry=r
        )
        self.operations = Counter(
            "mipart_partition_operations_total",
            "Partition changes by kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.operation_seconds = Histogram(
            "mipart_partition_operation_seconds",
            "Duration of partition changes",
            ["kind"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 180, 300, 600),
            registry=r,
        )
        pod_labels = ["namespace", "pod", "partition"]
        self.pod_memory_used = Gauge(
            "mipart_pod_memory_used_bytes",
            "VRAM a pod's processes use on a partition",
            pod_labels,
            registry=r,
        )
        self.pod_memory_limit = Gauge(
            "mipart_pod_memory_limit_bytes",
            "A pod's memory limit on a partition (0 on one it was not given)",
            pod_labels,
            registry=r,
        )
        self.memory_limit_exceeded = Counter(
            "mipart_memory_limit_exceeded_total",
            "Times a pod went over its memory limit on a partition",
            pod_labels,
            registry=r,
        )
        self._pod_series: set[tuple[str, str, str]] = set()

    def observe_status(self, status: NodeStatus) -> None:
        if status.hardware_error:
            self.hardware_errors.inc()
        inventory = status.inventory
        if inventory is None:
            return
        # Label sets change with the layout; start from empty so no stale series remain.
        for metric in (
            self.gpu_info,
            self.partitions,
            self.drained,
            self.partition_memory,
            self.partition_memory_used,
            self.temperature,
            self.power,
        ):
            metric.clear()
        for gpu in inventory.gpus:
            g = str(gpu.index)
            phase = status.phases.get(gpu.index, GpuPhase.READY).value
            self.gpu_info.labels(g, gpu.compute_mode.value, gpu.memory_mode.value, phase).set(1)
            self.partitions.labels(g).set(len(gpu.partitions))
            self.drained.labels(g).set(1 if gpu.index in status.drained else 0)
            if gpu.temperature_c is not None:
                self.temperature.labels(g).set(gpu.temperature_c)
            if gpu.power_w is not None:
                self.power.labels(g).set(gpu.power_w)
            for part in gpu.partitions:
                self.partition_memory.labels(part.id).set(part.geometry.memory_bytes)
                self.partition_memory_used.labels(part.id).set(part.memory_used_bytes)

    def observe_operation(self, kind: str, last: OperationEvent, seconds: float) -> None:
        self.operations.labels(kind, last.phase.value).inc()
        self.operation_seconds.labels(kind).observe(seconds)

    def observe_pod_memory(self, reading: MemoryReading, exceeded: tuple[PodMemory, ...]) -> None:
        series = {(m.namespace, m.name, m.partition_id): m for m in reading.pods}
        # Pods come and go; drop the series of those gone (not clear(): a scrape in between
        # would see every pod vanish for a moment).
        for gone in self._pod_series - series.keys():
            for metric in (self.pod_memory_used, self.pod_memory_limit, self.memory_limit_exceeded):
                metric.remove(*gone)
        self._pod_series = set(series)
        for labels, m in series.items():
            self.pod_memory_used.labels(*labels).set(m.used_bytes)
            self.pod_memory_limit.labels(*labels).set(m.limit_bytes)
            self.memory_limit_exceeded.labels(*labels)  # 0 from the start, for rate()
        for m in exceeded:
            self.memory_limit_exceeded.labels(m.namespace, m.name, m.partition_id).inc()
