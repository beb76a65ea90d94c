from components.deploy.component import build

__all__ = ["build"]
