"""The memory-limit monitor: per-process VRAM mapped to pods, and what a pod over its limit
gets."""
