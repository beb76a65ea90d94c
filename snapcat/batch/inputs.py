"""What batch prediction reads: a stream of photos, each with an id and maybe a given category.

Three inputs, as ``snapcat prepare`` takes them:

- a **folder** or **bucket prefix** (``gs://bucket/listings/``): every image file below it, in
  sorted order, streamed with ``fsspec``'s walk (a listing of millions is never held at once);
  the id is the path relative to the input; a photo under a top folder named after a taxonomy
  category (slug, English name or Korean label, as ``snapcat prepare`` reads folders:
  ``living-food/123.jpg``) carries that category;
- a **manifest** (``.csv``): a ``path`` column (relative to the manifest's folder, absolute, or a
  URI), optional ``id`` (default: the path) and optional ``category`` (a slug, or the seller's
  category for the catalogue audit). A manifest is data another system wrote, so its rows are
  held to ``prepare``'s allow-list (:mod:`snapcat.dataset.manifest_policy`: the manifest's own
  folder or bucket prefix and each ``allow_roots`` entry; no other schemes, no ``..`` out, no
  symlinks out, regular files only). A refused row is a result line with the reason, not a read.

Nothing here decodes a photo: the predict loop reads the bytes batch by batch.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset.manifest_policy import ManifestPolicy, Refused
from snapcat.errors import UserError

#: File endings batch prediction picks up in a folder (what the serving normalization decodes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif")


@dataclass(frozen=True)
class PhotoRef:
    """One photo to predict: ``id`` (unique in the run, what resume keys on), where to read it,
    and the category it was given (None: unknown)."""

    id: str
    uri: str
    category: str | None = None
    refused: Refused | None = None  # the allow-list refused the row: never read


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(".csv")


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    return fs, path.rstrip("/"), prefix


def iter_folder(uri: str, taxonomy: Taxonomy | None = None) -> Iterator[PhotoRef]:
    """Every image below ``uri`` (sorted, streamed folder by folder)."""
    fs, root, prefix = _fs(uri)
    if not fs.isdir(root):
        raise UserError(f"--input {uri}: no such folder or prefix (or a .csv manifest)")
    for folder, dirs, files in fs.walk(root):
        dirs.sort()  # walk visits sub-folders in this order
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = posixpath.join(folder, name)
            rel = posixpath.relpath(path, root)
            top = rel.split("/", 1)[0] if "/" in rel else None
            category = taxonomy.resolve(top) if taxonomy and top else None
            yield PhotoRef(rel, prefix + path, category)


def input_root(uri: str) -> str:
    """The folder or prefix an input may read below: a manifest's own folder, or the folder."""
    return posixpath.dirname(uri) if is_manifest(uri) else uri.rstrip("/")


def iter_manifest(uri: str, allow_roots: tuple[str, ...] = ()) -> Iterator[PhotoRef]:
    """The rows of a manifest CSV, streamed, each resolved by the allow-list."""
    policy = ManifestPolicy(input_root(uri), allow_roots)
    with fsspec.open(uri, "r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise UserError(f"--input {uri}: a manifest needs a 'path' column")
        for row in reader:
            path = (row.get("path") or "").strip()
            if not path:
                continue
            category = (row.get("category") or "").strip() or None
            photo_id = (row.get("id") or "").strip() or path
            try:
                yield PhotoRef(photo_id, policy.resolve(path), category)
            except Refused as refused:
                yield PhotoRef(photo_id, path, category, refused)


def iter_photos(
    uri: str, taxonomy: Taxonomy | None = None, allow_roots: tuple[str, ...] = ()
) -> Iterator[PhotoRef]:
    """The photos of a folder, bucket prefix or manifest, as :class:`PhotoRef` s."""
    if is_manifest(uri):
        return iter_manifest(uri, allow_roots)
    return iter_folder(uri, taxonomy)


def count_photos(
    uri: str, taxonomy: Taxonomy | None = None, allow_roots: tuple[str, ...] = ()
) -> int:
    """How many photos ``uri`` holds (one streaming pass): the progress bar's total."""
    return sum(1 for _ in iter_photos(uri, taxonomy, allow_roots))
