from components.batch_split.component import build

__all__ = ["build"]
