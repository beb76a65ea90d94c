"""What a model's input is (canonical side and JPEG quality) and which photos are refused.

Saved with every model (:mod:`snapcat.contract.model_info`) and read back by the transformer from
the predictor's answers; :mod:`snapcat.imaging.normalize` applies it to photos.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The smallest input size Xception accepts; canonical images may not be smaller.
MIN_MODEL_SIZE = 71


@dataclass(frozen=True)
class ImageSpec:
    """What the model's input is, and what inputs are refused. Saved with every model."""

    size: int = 299
    jpeg_quality: int = 90
    max_bytes: int = 30 * 1024 * 1024
    max_pixels: int = 100_000_000
    min_side: int = 16

    def __post_init__(self) -> None:
        if self.size < MIN_MODEL_SIZE:
            raise ValueError(f"image size {self.size} is below the model minimum {MIN_MODEL_SIZE}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be within 1..100")
