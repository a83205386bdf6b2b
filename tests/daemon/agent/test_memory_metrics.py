"""The per-pod memory series of the daemon's metrics (DaemonMetrics.observe_pod_memory)."""

from mipart.agent.metrics import DaemonMetrics
from mipart.sizing import MemoryReading, PodMemory

GIB = 2**30


def pod(name: str, used_gib: int, partition: str = "gpu0-spx-0") -> PodMemory:
    return PodMemory(f"ns/{name}", f"uid-{name}", partition, used_gib * GIB, 10 * GIB, (1,))


def value(metrics: DaemonMetrics, name: str, pod: str) -> float | None:
    labels = {"namespace": "ns", "pod": pod, "partition": "gpu0-spx-0"}
    return metrics.registry.get_sample_value(name, labels)


def test_usage_limit_and_excursions_per_pod_and_partition() -> None:
    metrics = DaemonMetrics()
    a, b = pod("a", 8), pod("b", 12)
    metrics.observe_pod_memory(MemoryReading((a, b), ()), ())
    assert value(metrics, "mipart_pod_memory_used_bytes", "a") == 8 * GIB
    assert value(metrics, "mipart_pod_memory_limit_bytes", "a") == 10 * GIB
    assert value(metrics, "mipart_memory_limit_exceeded_total", "a") == 0
    metrics.observe_pod_memory(MemoryReading((a, b), ()), (b,))
    metrics.observe_pod_memory(MemoryReading((a, b), ()), ())
    assert value(metrics, "mipart_memory_limit_exceeded_total", "b") == 1
    assert value(metrics, "mipart_memory_limit_exceeded_total", "a") == 0


def test_the_series_of_a_pod_gone_are_removed() -> None:
    metrics = DaemonMetrics()
    a, b = pod("a", 8), pod("b", 12)
    metrics.observe_pod_memory(MemoryReading((a, b), ()), (b,))
    metrics.observe_pod_memory(MemoryReading((a,), ()), ())
    for name in (
        "mipart_pod_memory_used_bytes",
        "mipart_pod_memory_limit_bytes",
        "mipart_memory_limit_exceeded_total",
    ):
        assert value(metrics, name, "b") is None
        assert value(metrics, name, "a") is not None
