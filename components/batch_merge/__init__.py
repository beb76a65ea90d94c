from components.batch_merge.component import build

__all__ = ["build"]
