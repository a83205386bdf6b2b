"""KServe's names that mipart reads: the InferenceService the webhook checks and the label by
which a pod names its InferenceService (KServe sets it on every pod it makes)."""

from __future__ import annotations

INFERENCESERVICE_GROUP = "serving.kserve.io"
INFERENCESERVICE_VERSION = "v1beta1"
INFERENCESERVICE_PLURAL = "inferenceservices"
INFERENCESERVICE_KIND = "InferenceService"
INFERENCESERVICE_API_VERSION = f"{INFERENCESERVICE_GROUP}/{INFERENCESERVICE_VERSION}"
# On each pod of an InferenceService: its name.
INFERENCESERVICE_LABEL = "serving.kserve.io/inferenceservice"
# The parts of an InferenceService that become pods. Each pod gets the InferenceService's
# annotations merged with its part's own (``spec.<part>.annotations``), the part's winning.
COMPONENTS = ("predictor", "transformer", "explainer")
