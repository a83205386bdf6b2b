"""Pure domain code of mipart: partition geometry, layouts and their rules.

Nothing here performs I/O or knows of gRPC, HTTP, Kubernetes or amdsmi; the
import-linter contracts in pyproject.toml keep it that way.
"""
