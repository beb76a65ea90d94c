"""A reviewed label audit applied to ``snapcat prepare``'s input: ``--relabel`` and ``--exclude``.

Both take a CSV keyed by ``path``, the photo's path relative to the input as prepare names it
(``index.csv``, ``rejected.csv`` and ``snapcat audit``'s ``label_issues.csv`` use the same):

- ``--relabel CSV``: each row's photo takes the category in its ``suggested_label`` column (the
  audit's column, edited by the reviewer), or ``category`` when there is no such column; a slug,
  English name or Korean label; it must be a trainable category;
- ``--exclude CSV``: each row's photo is left out; it appears in ``rejected.csv`` as
  ``excluded-by-review``, so the dataset still says where every input photo went.

A path the input does not have is reported (a CSV from another dataset is a mistake to see),
never silently ignored. The input's own files are never modified.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import fsspec

from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset.sources import SourceError, SourceItem

log = logging.getLogger(__name__)

EXCLUDED = "excluded-by-review"


@dataclass
class Corrections:
    items: list[SourceItem]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (display path, reason)
    summary: dict = field(default_factory=dict)


def _rows(uri: str, flag: str) -> list[dict[str, str]]:
    with fsspec.open(uri, "r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise SourceError(f"{flag} {uri}: the CSV needs a 'path' column")
        return [row for row in reader if (row.get("path") or "").strip()]


def read_relabel(uri: str, taxonomy: Taxonomy) -> dict[str, str]:
    """Display path -> trainable slug."""
    rows = _rows(uri, "--relabel")
    column = "suggested_label" if rows and "suggested_label" in rows[0] else "category"
    relabel = {}
    for row in rows:
        name = (row.get(column) or "").strip()
        slug = taxonomy.resolve(name) if name else None
        if slug is None or not taxonomy[slug].trainable:
            raise SourceError(
                f"--relabel {uri}: {row['path']}: {column} {name!r} is not a trainable category"
            )
        relabel[row["path"].strip()] = slug
    return relabel


def read_exclude(uri: str) -> set[str]:
    return {row["path"].strip() for row in _rows(uri, "--exclude")}


def review_fingerprint(relabel: str | None = None, exclude: str | None = None) -> str:
    """A digest of a reviewed label audit's files (their contents, not their names), ``""``
    without any: a pipeline adds it to prepare's cache key, so a reviewer's edit to a CSV kept
    at the same URI prepares the data again instead of reusing last run's dataset."""
    if not relabel and not exclude:
        return ""
    import hashlib

    digest = hashlib.sha256()
    for flag, uri in (("relabel", relabel), ("exclude", exclude)):
        if uri:
            with fsspec.open(uri, "rb") as handle:
                digest.update(f"{flag}\0".encode() + hashlib.sha256(handle.read()).digest())
    return f"review={digest.hexdigest()[:16]}"


def apply_corrections(
    items: Sequence[SourceItem],
    taxonomy: Taxonomy,
    relabel: str | None = None,
    exclude: str | None = None,
) -> Corrections:
    """``items`` with the reviewed relabels and exclusions applied (exclusion wins)."""
    new_labels = read_relabel(relabel, taxonomy) if relabel else {}
    dropped = read_exclude(exclude) if exclude else set()
    result = Corrections(items=[])
    relabelled = 0
    for item in items:
        if item.display in dropped:
            result.rejected.append((item.display, EXCLUDED))
            continue
        slug = new_labels.get(item.display)
        if slug is not None and slug != item.slug:
            item = replace(item, slug=slug)
            relabelled += 1
        result.items.append(item)
    seen = {item.display for item in items}
    unmatched = sorted((set(new_labels) | dropped) - seen)
    if unmatched:
        log.warning(
            "%d reviewed paths are not in the input (first: %s)", len(unmatched), unmatched[0]
        )
    result.summary = {
        "relabelled": relabelled,
        "excluded": len(result.rejected),
        "unmatched": unmatched,
    }
    return result
