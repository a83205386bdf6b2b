"""The mipart node daemon: owns a node's MI300X partitions and serves them over gRPC."""
