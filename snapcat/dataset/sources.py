"""Finds the labelled photos of an input: a folder per category, or a CSV/JSONL manifest.

The result accounts for every file seen: each becomes a :class:`SourceItem` with a resolved
category, or a rejection with a reason. Category names are resolved through the taxonomy
(slug, English name or Korean label, nested or escaped), never trusted as-is.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec

from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset.manifest_policy import ManifestPolicy, Refused, inside
from snapcat.dataset.splits import parse_split
from snapcat.errors import SnapcatError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")


class SourceError(SnapcatError, ValueError):
    """The input as a whole is unusable (unknown categories, unreadable manifest, ...)."""


@dataclass(frozen=True)
class SourceItem:
    uri: str  # what workers open (local path or URI)
    display: str  # what people see in reports: the path relative to the input
    slug: str
    split: str | None = None  # fixed by a manifest's ``split`` column; None: the hash decides


@dataclass
class Discovery:
    items: list[SourceItem] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (display path, reason)
    non_trainable: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)  # category name -> files
    category_dirs: set[str] = field(default_factory=set)  # slugs named by the input at all


def _protocol_root(uri: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    return fs, path, prefix


def discover(
    input_uri: str,
    taxonomy: Taxonomy,
    manifest: str | None = None,
    ignore_unknown: bool = False,
    allow_roots: tuple[str, ...] | list[str] = (),
) -> Discovery:
    """Lists the input. ``input_uri`` may itself be a manifest file. ``allow_roots``: folders or
    bucket prefixes a manifest may name besides its own folder (``--allow-root``)."""
    if manifest is None and input_uri.lower().endswith(MANIFEST_SUFFIXES):
        manifest, input_uri = input_uri, posixpath.dirname(input_uri) or "."
    found = (
        _from_manifest(manifest, input_uri, taxonomy, tuple(allow_roots))
        if manifest
        else _from_folders(input_uri, taxonomy)
    )
    if found.unknown and not ignore_unknown:
        listed = ", ".join(f"{name!r} ({n} files)" for name, n in sorted(found.unknown.items()))
        raise SourceError(
            f"unknown categories in the input: {listed}. Rename them to a slug, English name or "
            "Korean label from `snapcat taxonomy`, or pass --ignore-unknown to reject their files."
        )
    found.items.sort(key=lambda item: item.display)
    found.rejected.sort()
    return found


def _classify(
    found: Discovery,
    taxonomy: Taxonomy,
    slug: str,
    uri: str,
    display: str,
    split: str | None = None,
) -> None:
    found.category_dirs.add(slug)
    if taxonomy[slug].trainable:
        found.items.append(SourceItem(uri=uri, display=display, slug=slug, split=split))
    else:
        found.non_trainable[slug] += 1
        found.rejected.append((display, "non-trainable-category"))


def _from_folders(input_uri: str, taxonomy: Taxonomy) -> Discovery:
    fs, root, prefix = _protocol_root(input_uri)
    if not fs.isdir(root):
        raise SourceError(f"input {input_uri} is not a folder or a manifest file")
    found = Discovery()
    root = root.rstrip("/")
    # A local file whose real path is outside the input (a symlink out of a category folder)
    # would put any file this job can read into the dataset: refused, as a manifest's row is.
    real_root = os.path.realpath(root) if not prefix else None
    for directory, _subdirs, files in fs.walk(root):
        rel_dir = posixpath.relpath(directory, root) if directory.rstrip("/") != root else ""
        parts = [unicodedata.normalize("NFC", p) for p in rel_dir.split("/") if p]
        if parts and _subdirs == [] and not files:
            resolved = taxonomy.resolve_path(parts)
            if resolved:  # an empty category folder still counts as named, with 0 photos
                found.category_dirs.add(resolved[0])
        for name in sorted(files):
            display = "/".join([*parts, unicodedata.normalize("NFC", name)])
            uri = prefix + posixpath.join(directory, name)
            if not parts:
                found.rejected.append((display, "no-category-folder"))
                continue
            if real_root and not inside(os.path.realpath(uri), real_root):
                found.rejected.append((display, "outside-input"))
                continue
            resolved = taxonomy.resolve_path(parts)
            if resolved is None:
                found.unknown[parts[0]] += 1
                found.rejected.append((display, "unknown-category"))
                continue
            _classify(found, taxonomy, resolved[0], uri, display)
    return found


def _read_manifest_rows(manifest: str, found: Discovery) -> Iterator[tuple[int, dict]]:
    """(line number, row) of each manifest row, streamed: a million-row manifest is never held
    whole (was: the text, then a list of every row). An unreadable JSONL line is a refused row."""
    with fsspec.open(manifest, "rt", encoding="utf-8-sig", newline="") as handle:
        if manifest.lower().endswith(".csv"):
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"path", "category"} <= set(reader.fieldnames):
                raise SourceError(f"manifest {manifest} needs a header with 'path' and 'category'")
            for number, row in enumerate(reader, 2):
                yield number, row
            return
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                found.rejected.append((f"(line {number})", "bad-manifest-row"))
                continue
            if not isinstance(row, dict) or "path" not in row or "category" not in row:
                found.rejected.append((f"(line {number})", "bad-manifest-row"))
                continue
            yield number, row


def _from_manifest(
    manifest: str, base_uri: str, taxonomy: Taxonomy, allow_roots: tuple[str, ...] = ()
) -> Discovery:
    """Relative paths resolve against ``base_uri`` (the manifest's folder unless --input says);
    every row must name a file inside it or an ``allow_roots`` entry
    (:mod:`snapcat.dataset.manifest_policy`), or it is refused with its reason."""
    found = Discovery()
    policy = ManifestPolicy(base_uri, allow_roots)
    bad_splits: Counter = Counter()
    for _number, row in _read_manifest_rows(manifest, found):
        try:
            split = parse_split(row.get("split"))
        except ValueError:
            bad_splits[str(row.get("split"))[:100]] += 1
            continue
        # The file is opened by exactly the name written (file names are bytes: an NFD name on
        # disk must stay NFD); reports show it NFC like folder inputs do.
        path = str(row.get("path") or "").strip()
        name = str(row.get("category") or "").strip()
        if not path:
            found.rejected.append(("(empty path)", "missing-path"))
            continue
        display = unicodedata.normalize("NFC", path.replace("\x00", "\\0"))[:500]
        try:
            uri = policy.resolve(path)
        except Refused as refused:
            found.rejected.append((display, refused.reason))
            continue
        # A missing file is found (and rejected as such) by the worker that reads it, so a
        # million-row manifest over a bucket costs no extra listing round-trips here.
        slug = taxonomy.resolve(name)
        if slug is None:
            found.unknown[name or "(empty)"] += 1
            found.rejected.append((display, "unknown-category"))
        else:
            _classify(found, taxonomy, slug, uri, display, split)
    if bad_splits:
        listed = ", ".join(f"{value!r} ({n} rows)" for value, n in sorted(bad_splits.items()))
        raise SourceError(
            f"manifest {manifest}: unknown split values {listed}; the optional 'split' column "
            "takes train, validation, test (any case), or unassigned/empty to let the hash decide"
        )
    return found


#: Per-file fields object stores and local filesystems report that change when the bytes change.
_CHANGE_TOKENS = ("ETag", "etag", "md5Hash", "crc32c", "LastModified", "updated", "mtime")


def fingerprint(input_uri: str, manifest: str | None = None) -> str:
    """A cheap digest of what ``prepare`` would read: every file's path, size and change token
    (ETag, MD5, modification time: whichever the store reports), from one listing, without
    reading a photo. Changed, added or removed photos (or a changed manifest) change it, so a
    pipeline that passes it to ``prepare`` gets a new cache key exactly when the data changed."""
    import hashlib

    if manifest is None and input_uri.lower().endswith(MANIFEST_SUFFIXES):
        manifest, input_uri = input_uri, posixpath.dirname(input_uri) or "."
    digest = hashlib.sha256()
    if manifest:
        content = hashlib.sha256()
        with fsspec.open(manifest, "rb") as handle:
            while chunk := handle.read(1 << 20):
                content.update(chunk)
        digest.update(b"manifest\0" + content.digest())
    fs, root = fsspec.core.url_to_fs(input_uri)
    if not fs.isdir(root):
        raise SourceError(f"input {input_uri} is not a folder or a manifest file")
    root = root.rstrip("/")
    listing = fs.find(root, detail=True)
    files = 0
    for path in sorted(listing):
        info = listing[path]
        if info.get("type") == "directory":
            continue
        token = next((str(info[k]) for k in _CHANGE_TOKENS if info.get(k) is not None), "")
        relative = posixpath.relpath(path, root)
        digest.update(f"{relative}\0{info.get('size')}\0{token}\n".encode())
        files += 1
    return f"files={files};sha256={digest.hexdigest()[:16]}"
