"""Frozen ImageNet EfficientNet-Lite0 features (global average pooled) of a prepared dataset.

The audit needs probabilities for each photo from a model that never saw that photo's label.
Frozen backbone features plus a k-fold linear head are enough (the linear probe on these
features reaches 0.97 top-1 on the real-photo set, ``benchmarks/real_photo_bench.py``) and cost
one forward pass per photo, not one training run per fold.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

BACKBONE = "efficientnet-lite0"


@dataclass
class DatasetPhotos:
    """Every photo of a prepared dataset (all splits), in a stable order."""

    sources: list[str]  # path relative to the input, as prepare's index.csv names it
    labels: np.ndarray  # index into classes
    classes: list[str]
    splits: list[str]
    images: list[bytes]  # canonical JPEG bytes


def load_dataset(data: str) -> DatasetPhotos:
    import json

    from snapcat import storage
    from snapcat.dataset.shards import read_split

    stats = json.loads(storage.read_bytes(storage.join(data, "stats.json")))
    sources, labels, splits, images = [], [], [], []
    for split in ("train", "validation", "test"):
        for record in sorted(read_split(data, split), key=lambda r: r["source"]):
            sources.append(record["source"])
            labels.append(record["label"])
            splits.append(split)
            images.append(record["image"])
    return DatasetPhotos(sources, np.asarray(labels, np.int64), stats["classes"], splits, images)


def extract_features(
    images: list[bytes], image_size: int, weights: str = "imagenet", batch_size: int = 32
) -> np.ndarray:
    """``float64 [N, D]`` pooled Lite0 features of canonical JPEGs (the model's own input
    preprocessing runs in its graph, as in training)."""
    import keras
    from PIL import Image

    from snapcat.train.modeling import ModelSpec, build_model

    model, _ = build_model(ModelSpec(BACKBONE, 2, image_size, weights, 0.0))
    extractor = keras.Model(model.input, model.get_layer("avg_pool").output)
    out = []
    for start in range(0, len(images), batch_size):
        pixels = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), "float32")
                for b in images[start : start + batch_size]
            ]
        )
        out.append(extractor.predict_on_batch(pixels))
    return np.concatenate(out).astype(np.float64)
