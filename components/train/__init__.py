from components.train.component import build

__all__ = ["build"]
