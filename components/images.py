"""The container images the components run in: the training image (Dockerfile.train) for steps
that need TensorFlow, the light pipeline image (Dockerfile.pipeline) for those that do not."""

from importlib import metadata

REGISTRY = "ghcr.io/snapcat"


def default_train_image() -> str:
    """Tagged with the project version, so the compiled pipeline names the image its code is in."""
    return f"{REGISTRY}/snapcat-train:{metadata.version('snapcat')}"


def default_light_image() -> str:
    """For steps that only list storage or call the Kubernetes API (no TensorFlow, no CUDA)."""
    return f"{REGISTRY}/snapcat-pipeline:{metadata.version('snapcat')}"
