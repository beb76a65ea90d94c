"""The name the classifier is served under, unless a flag or parameter says otherwise.

One name runs through the whole chain: the InferenceService, TF Serving's model name (and the
``model_spec`` of the warm-up requests it replays), the transformer's V1/V2 routes, the client and
the pipeline's deploy step. A dependency-free module, so that the transformer, the rollout CLI and
the pipeline definition all import it without pulling in each other's libraries.
"""

DEFAULT_MODEL_NAME = "listing-category"
