"""The partition manager: per-GPU state machine, node-wide memory changes, crash-safe intent."""
