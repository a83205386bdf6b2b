"""Names on the API server and the node that more than one mipart process uses."""

from __future__ import annotations

# The extended resource a pod requests (the webhook adds the request) and the device plugin
# advertises: one unit per partition slot.
PARTITION_RESOURCE = "mipart.io/partition"
# The CDI kind of the device plugin's per-slot specs: the kubelet hands "<kind>=<slot>" to the
# container runtime, which reads the spec the daemon wrote.
CDI_KIND = "mipart.io/slot"
# The scheduling gate that holds a queued pod: the webhook adds it, mipart-controller removes
# it when the pod's turn comes.
QUEUE_GATE = "mipart.io/queue"

# GPUNode, the cluster-scoped CRD (manifests/charts/mipart/crds/gpunodes.mipart.io.yaml): the
# daemon writes its status, the controller its spec, the extender and the CLIs read both.
GPUNODE_GROUP = "mipart.io"
GPUNODE_VERSION = "v1alpha1"
GPUNODE_PLURAL = "gpunodes"
GPUNODES = f"/apis/{GPUNODE_GROUP}/{GPUNODE_VERSION}/{GPUNODE_PLURAL}"
GPUNODE_API_VERSION = f"{GPUNODE_GROUP}/{GPUNODE_VERSION}"

# The reportingController of each component's Events (kubectl get events
# --field-selector reportingController=...), one writer each.
DAEMON_COMPONENT = "mipart.io/daemon"
EXTENDER_COMPONENT = "mipart.io/extender"
CONTROLLER_COMPONENT = "mipart.io/controller"
