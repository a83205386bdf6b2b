"""The gRPC edge of the daemon: NodeService, health and reflection on a unix socket or mTLS TCP."""
