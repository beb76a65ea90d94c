from components.select.component import build

__all__ = ["build"]
