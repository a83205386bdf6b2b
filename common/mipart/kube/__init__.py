"""Kubernetes adapters shared by the daemon and the cluster components: a raw JSON API client
over the official client's configuration, and a list-watch cache (informer).

Objects stay plain dicts parsed from JSON: the generated model classes cost about a
millisecond per pod to build, which an extender watching thousands of pods cannot afford.
"""
