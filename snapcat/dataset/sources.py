"""Finds the labelled photos of an input: a folder per category, or a CSV/JSONL manifest.

The result accounts for every file seen: each becomes a :class:`SourceItem` with a resolved
category, or a rejection with a reason. Category names are resolved through the taxonomy
(slug, English name or Korean label, nested or escaped), never trusted as-is.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import fsspec

from snapcat.contract.taxonomy import Taxonomy
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
    input_uri: str, taxonomy: Taxonomy, manifest: str | None = None, ignore_unknown: bool = False
) -> Discovery:
    """Lists the input. ``input_uri`` may itself be a manifest file."""
    if manifest is None and input_uri.lower().endswith(MANIFEST_SUFFIXES):
        manifest, input_uri = input_uri, posixpath.dirname(input_uri) or "."
    found = (
        _from_manifest(manifest, input_uri, taxonomy)
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
            resolved = taxonomy.resolve_path(parts)
            if resolved is None:
                found.unknown[parts[0]] += 1
                found.rejected.append((display, "unknown-category"))
                continue
            _classify(found, taxonomy, resolved[0], uri, display)
    return found


def _read_manifest_rows(manifest: str) -> list[dict[str, str]]:
    with fsspec.open(manifest, "rb") as handle:
        text = handle.read().decode("utf-8-sig")
    if manifest.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"path", "category"} <= set(reader.fieldnames):
            raise SourceError(f"manifest {manifest} needs a header with 'path' and 'category'")
        return list(reader)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{manifest} line {number} is not JSON: {exc}") from exc
        if not isinstance(row, dict) or "path" not in row or "category" not in row:
            raise SourceError(f"{manifest} line {number} needs 'path' and 'category'")
        rows.append(row)
    return rows


def _from_manifest(manifest: str, base_uri: str, taxonomy: Taxonomy) -> Discovery:
    """Relative paths resolve against ``base_uri`` (the manifest's folder unless --input says)."""
    found = Discovery()
    _fs, base, prefix = _protocol_root(base_uri)
    bad_splits: Counter = Counter()
    for row in _read_manifest_rows(manifest):
        try:
            split = parse_split(row.get("split"))
        except ValueError:
            bad_splits[str(row.get("split"))] += 1
            continue
        # The file is opened by exactly the name written (file names are bytes: an NFD name on
        # disk must stay NFD); reports show it NFC like folder inputs do.
        path = str(row.get("path") or "").strip()
        name = str(row.get("category") or "").strip()
        if not path:
            found.rejected.append(("(empty path)", "missing-path"))
            continue
        display = unicodedata.normalize("NFC", path)
        if "://" in path:
            uri = path
        else:
            full = path if posixpath.isabs(path) else posixpath.join(base, path)
            uri = prefix + posixpath.normpath(full)
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
        with fsspec.open(manifest, "rb") as handle:
            digest.update(b"manifest\0" + hashlib.sha256(handle.read()).digest())
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
