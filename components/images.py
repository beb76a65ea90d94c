"""The container image every component runs in (built from Dockerfile.train)."""

from importlib import metadata

REGISTRY = "ghcr.io/snapcat"


def default_train_image() -> str:
    """Tagged with the project version, so the compiled pipeline names the image its code is in."""
    return f"{REGISTRY}/snapcat-train:{metadata.version('snapcat')}"
