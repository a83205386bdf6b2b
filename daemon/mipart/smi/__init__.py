"""``mipart-smi``: an amd-smi-style view of one node, read from the daemon over gRPC."""
