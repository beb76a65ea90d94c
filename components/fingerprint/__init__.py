from components.fingerprint.component import build

__all__ = ["build"]
