from components.prepare.component import build

__all__ = ["build"]
