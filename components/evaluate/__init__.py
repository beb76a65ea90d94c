from components.evaluate.component import build

__all__ = ["build"]
