"""The ``mipart.io/`` annotation keys: the ones users write on pods, and the ones mipart
writes for its own processes to read back. docs/annotations.md is the user's guide to them."""

from __future__ import annotations

PREFIX = "mipart.io/"

# Written by users (or their InferenceService's predictor); read by the webhook, the extender
# and the controller (mipart.cluster.annotations validates them).
MEMORY = PREFIX + "memory"
MODEL = PREFIX + "model"
PARTITIONS = PREFIX + "partitions"
PARTITION_MODE = PREFIX + "partition-mode"
QOS = PREFIX + "qos"
SHARING = PREFIX + "sharing"
QUEUE = PREFIX + "queue"
USER_ANNOTATIONS = (MEMORY, MODEL, PARTITIONS, PARTITION_MODE, QOS, SHARING, QUEUE)

# Written by the extender at bind, atomically with spec.nodeName; read by the daemon, the
# controller and mipart-smi (its text form: mipart.contract.allocation).
ALLOCATION = PREFIX + "allocation"
# Written by mipart-controller when it releases a pod of partition-mode "any": the mode the
# re-partition planner counted the pod on, which placement then holds it to.
PLANNED_MODE = PREFIX + "planned-mode"
# Written by mipart-controller in the same patch, for a pod the planner admitted: the node and
# partitions the plan counted the pod on, and until when (UTC) the pod is held to exactly
# those. Read by the extender (filter, prioritize and bind honour it until it expires) and by
# the controller (the held partitions count as taken until the pod is bound). Its text form:
# mipart.contract.planned_partitions.
PLANNED_PARTITIONS = PREFIX + "planned-partitions"
# On a GPUNode, written and read by mipart-controller: when each GPU's mode last changed
# (the planner's cool-down survives a controller restart).
CHANGED_AT = PREFIX + "changed-at"
