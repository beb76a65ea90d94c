"""What a trained model carries beside its weights, readable without TensorFlow.

An exported model folder follows TF Serving's layout (``MODEL_DIR/<integer version>/``). Each
version holds ``assets/snapcat/model.json`` (class order, labels, image spec, backbone) and the
taxonomy snapshot it was trained on, plus ``model_card.json`` for people. The serving transformer
reads the labels from here, never from code, so a model with a different class list cannot be
mislabelled by a transformer built for another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import fsspec

from snapcat.contract.image_spec import ImageSpec

ASSETS_SUBDIR = "snapcat"
MODEL_INFO_FILE = "model.json"
TAXONOMY_FILE = "taxonomy.yaml"
MODEL_CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class ModelInfo:
    classes: tuple[str, ...]  # slugs in output index order
    labels: dict[str, str]  # slug -> Korean display label
    names: dict[str, str]  # slug -> English name
    taxonomy_version: str
    image_size: int
    jpeg_quality: int
    backbone: str
    version: int
    #: Temperature scaling applied inside the serving signature (1.0: uncalibrated) and the top-3
    #: mass at or above which an answer is ``confident`` (None: never), see snapcat.train.calibration_fit.
    temperature: float = 1.0
    confidence_threshold: float | None = None
    #: How they were obtained (target precision, validation photos, ...); None: not calibrated.
    calibration: dict | None = None

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(size=self.image_size, jpeg_quality=self.jpeg_quality)

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "labels": self.labels,
            "names": self.names,
            "taxonomy_version": self.taxonomy_version,
            "image_size": self.image_size,
            "jpeg_quality": self.jpeg_quality,
            "backbone": self.backbone,
            "version": self.version,
            "temperature": self.temperature,
            "confidence_threshold": self.confidence_threshold,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> ModelInfo:
        return cls(
            classes=tuple(raw["classes"]),
            labels=dict(raw["labels"]),
            names=dict(raw.get("names", {})),
            taxonomy_version=str(raw["taxonomy_version"]),
            image_size=int(raw["image_size"]),
            jpeg_quality=int(raw.get("jpeg_quality", ImageSpec.jpeg_quality)),
            backbone=str(raw["backbone"]),
            version=int(raw["version"]),
            # models exported before calibration: served uncalibrated, never "confident"
            temperature=float(raw.get("temperature", 1.0)),
            confidence_threshold=raw.get("confidence_threshold"),
            calibration=raw.get("calibration"),
        )


def list_versions(model_dir: str) -> list[int]:
    """Integer version folders, as TF Serving sees them (staging folders are not integers)."""
    fs, path = fsspec.core.url_to_fs(model_dir)
    if not fs.isdir(path):
        return []
    names = [Path(p.rstrip("/")).name for p in fs.ls(path, detail=False)]
    return sorted(int(n) for n in names if n.isdigit())


def latest_version_dir(model_dir: str) -> str:
    versions = list_versions(model_dir)
    if not versions:
        raise FileNotFoundError(f"{model_dir} holds no integer version folder (TF Serving layout)")
    return f"{model_dir.rstrip('/')}/{versions[-1]}"


def resolve_version_dir(model_or_version_dir: str) -> str:
    """``MODEL_DIR`` (then its highest version) or one ``MODEL_DIR/<version>`` -> the version."""
    path = model_or_version_dir.rstrip("/")
    return path if Path(path).name.isdigit() else latest_version_dir(path)


def assets_dir(version_dir: str) -> str:
    """Where a version keeps snapcat's files: SavedModel assets, which TF Serving ignores."""
    return f"{version_dir.rstrip('/')}/assets/{ASSETS_SUBDIR}"


def info_path(version_dir: str) -> str:
    return f"{assets_dir(version_dir)}/{MODEL_INFO_FILE}"


def taxonomy_path(version_dir: str) -> str:
    return f"{assets_dir(version_dir)}/{TAXONOMY_FILE}"


def load_model_info(model_or_version_dir: str) -> ModelInfo:
    """Accepts ``MODEL_DIR`` (then its highest version) or one ``MODEL_DIR/<version>``."""
    with fsspec.open(
        info_path(resolve_version_dir(model_or_version_dir)), "r", encoding="utf-8"
    ) as handle:
        return ModelInfo.from_dict(json.load(handle))
