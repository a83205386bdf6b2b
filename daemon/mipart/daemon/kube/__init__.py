"""The Kubernetes edge of the daemon: publishes GPUNode status (and, later, reads its spec)."""
