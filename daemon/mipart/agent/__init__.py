"""mipart-daemon, the node agent: owns a node's MI300X partitions and serves them over gRPC."""
