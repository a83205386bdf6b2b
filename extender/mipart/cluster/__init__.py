"""What the cluster-side processes share: a pod's annotations read as a request, the cluster
as the placement engine sees it (fed by informers), GPUNodes read as capacity, Events, and the
small JSON HTTP server."""
