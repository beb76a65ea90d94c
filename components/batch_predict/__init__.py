from components.batch_predict.component import build

__all__ = ["build"]
