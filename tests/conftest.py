"""Shared test helpers: small generated images, photo trees and the bundled sample data.

Everything here is generic so any test module may import it (``from conftest import ...``):

- :func:`make_image` / :func:`make_image_bytes`: a distinct, deterministic picture (gradient plus
  seeded noise, or one flat colour) in any Pillow mode and format, optionally with EXIF
  orientation or an ICC profile.
- :func:`write_image` and :func:`make_tree`: lay such images out as a folder-per-category input.
- :func:`read_csv`: rows of a CSV written by ``snapcat prepare``.
- fixtures ``sample_dir`` (``data/sample``) and ``taxonomy`` (the packaged taxonomy).
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "data" / "sample"

#: EXIF tag number of Orientation.
EXIF_ORIENTATION = 0x0112


def make_image(
    size: tuple[int, int] = (120, 90),
    mode: str = "RGB",
    color: tuple[int, ...] | int | None = None,
    seed: int = 0,
) -> Image.Image:
    """A ``size`` (width, height) image in ``mode``.

    With ``color`` the image is that one flat colour. Otherwise it is a smooth gradient plus noise
    drawn from ``seed``, so two different seeds give different pixels (and never collapse into
    duplicates after normalization) while the same seed always gives the same image.
    """
    if color is not None:
        return Image.new(mode, size, color)
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(0, 255, size=3)
    channels = [
        (base[0] + 120 * xx / max(1, width - 1)) % 256,
        (base[1] + 120 * yy / max(1, height - 1)) % 256,
        (base[2] + 60 * (xx + yy) / max(1, width + height - 2)) % 256,
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 18, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **save_kwargs) -> bytes:
    """``image`` saved as ``fmt`` (any Pillow format name, "HEIF" via pillow-heif)."""
    if fmt.upper() in ("HEIF", "HEIC"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        fmt = "HEIF"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def make_image_bytes(
    fmt: str = "JPEG",
    size: tuple[int, int] = (120, 90),
    mode: str = "RGB",
    color: tuple[int, ...] | int | None = None,
    seed: int = 0,
    orientation: int | None = None,
    icc_profile: bytes | None = None,
    **save_kwargs,
) -> bytes:
    """Encoded image bytes; see :func:`make_image`. ``orientation`` sets the EXIF Orientation
    tag (1..8) and ``icc_profile`` embeds that profile; other keywords go to ``Image.save``."""
    image = make_image(size, mode, color, seed)
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        save_kwargs["exif"] = exif
    if icc_profile is not None:
        save_kwargs["icc_profile"] = icc_profile
    return encode(image, fmt, **save_kwargs)


def seed_for(text: str) -> int:
    """A stable seed derived from a name, so every file of a tree gets its own picture."""
    return zlib.crc32(text.encode("utf-8"))


def write_image(path: str | Path, fmt: str = "JPEG", seed: int | None = None, **kwargs) -> Path:
    """Writes a generated image to ``path`` (parents created); the seed defaults to one derived
    from the path so different files never hold the same picture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        make_image_bytes(fmt, seed=seed_for(str(path)) if seed is None else seed, **kwargs)
    )
    return path


def make_tree(
    root: str | Path, counts: Mapping[str, int], fmt: str = "JPEG", prefix: str = "img", **kwargs
) -> dict[str, list[Path]]:
    """A folder-per-category input: ``counts`` maps a folder (``/`` nests it) to how many distinct
    images to write there. Returns the written paths per folder key."""
    root = Path(root)
    suffix = {"JPEG": "jpg", "HEIF": "heic", "TIFF": "tif"}.get(fmt.upper(), fmt.lower())
    written: dict[str, list[Path]] = {}
    for folder, n in counts.items():
        directory = root.joinpath(*folder.split("/"))
        directory.mkdir(parents=True, exist_ok=True)
        written[folder] = [
            write_image(directory / f"{prefix}_{i:03d}.{suffix}", fmt, **kwargs) for i in range(n)
        ]
    return written


def v2_categories(body: dict, index: int, k: int = 3) -> list[dict]:
    """Photo ``index``'s top-``k`` categories from a V2 (Open Inference Protocol) answer, whose
    ``slug``/``label``/``score`` outputs hold ``k`` entries per photo, flattened."""
    outputs = {o["name"]: o["data"][k * index : k * index + k] for o in body["outputs"]}
    return [
        {"slug": s, "label": label, "score": score}
        for s, label, score in zip(outputs["slug"], outputs["label"], outputs["score"], strict=True)
    ]


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample dataset (``data/sample``: a folder per category plus PROVENANCE.md and
    manifest.csv at its root)."""
    assert SAMPLE_DIR.is_dir(), f"sample data missing at {SAMPLE_DIR}"
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def taxonomy():
    from snapcat.contract.taxonomy import Taxonomy

    return Taxonomy.load()


#: Markers whose tests run only when the marker expression names them: ``image`` builds and runs
#: the Docker images (minutes, and Docker as root; ``make image-test``), ``long`` are the few tests
#: of several minutes each, kill-and-resume runs and the alternative backbone's training
#: (``make test-long``), ``browser`` look at pages in headless Chromium (installed by
#: ``scripts/chromium.sh``; ``make test-long`` runs them too). CI runs them all after
#: ``make test``, which stays under ~15 minutes.
ON_REQUEST_MARKERS = ("image", "long", "browser")


def pytest_collection_modifyitems(config, items):
    """Deselects the :data:`ON_REQUEST_MARKERS` tests unless ``-m`` asks for their marker, so a
    plain ``pytest`` or ``make test`` never runs them."""
    asked = config.getoption("markexpr") or ""
    held_back = [m for m in ON_REQUEST_MARKERS if m not in asked]
    skipped = [item for item in items if any(item.get_closest_marker(m) for m in held_back)]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item not in skipped]


@pytest.fixture(scope="session")
def real_photo_set() -> Path:
    """The real-photo check set (benchmarks/real_photos.py: 174 photographs from two pinned Debian
    packages, cached in .cache/real-photos), built once per run; skipped only when Debian's
    package registry cannot be reached."""
    import sys

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import real_photos

    try:
        return real_photos.build(REPO_ROOT / ".cache" / "real-photos")
    except RuntimeError as exc:
        pytest.skip(f"real-photo set unavailable: {exc}")
