"""The kubelet device plugin: anonymous slots for ``mipart.io/partition``, resolved to the
pod's own partitions through CDI just before each container starts (docs/device-plugin.md)."""
