"""The category taxonomy: one source of truth shared by data preparation, training and serving.

Every model is trained against an ordered list of trainable slugs derived from this taxonomy and
saves that list (plus labels) beside itself, so nothing downstream ever depends on directory
listing order or on a mapping typed into code.

Folder names and manifest values may name a category by slug, English name or Korean label.
Korean labels contain "/", so a label may appear either nested (``가구/인테리어/photo.jpg`` as two
directory levels) or escaped in a single path component. The documented escape is ``%2F``
(``가구%2F인테리어``); the look-alike slashes U+FF0F "／" and U+2215 "∕", which people type when a
file system refuses "/", are accepted too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from snapcat.errors import SnapcatError

#: Spellings of "/" accepted inside a single path component of a Korean label.
LABEL_SLASH_ESCAPES = ("%2F", "%2f", "\uff0f", "\u2215")
#: The longest nesting of a label written as directories ("도서/티켓/음반" has three levels).
_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class TaxonomyError(SnapcatError, ValueError):
    """The taxonomy file is malformed, or a name does not resolve to a category."""


@dataclass(frozen=True)
class Category:
    slug: str
    label: str
    name: str
    trainable: bool


def _fold(text: str) -> str:
    """Case-, width- and punctuation-insensitive key for matching human-typed names."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^0-9a-z\u3131-\u318e\uac00-\ud7a3/]+", "-", text).strip("-")


def unescape_label(component: str) -> str:
    """Turns an escaped single-component label (``가구%2F인테리어``) back into ``가구/인테리어``."""
    component = unicodedata.normalize("NFC", component)
    for escape in LABEL_SLASH_ESCAPES:
        component = component.replace(escape, "/")
    return component


@dataclass(frozen=True)
class Taxonomy:
    version: str
    categories: tuple[Category, ...]

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Taxonomy:
        if not isinstance(raw, dict) or "categories" not in raw or "version" not in raw:
            raise TaxonomyError("taxonomy must be a mapping with 'version' and 'categories'")
        categories = []
        for i, entry in enumerate(raw["categories"]):
            try:
                category = Category(
                    slug=str(entry["slug"]),
                    label=unicodedata.normalize("NFC", str(entry["label"])),
                    name=str(entry["name"]),
                    trainable=bool(entry["trainable"]),
                )
            except (KeyError, TypeError) as exc:
                raise TaxonomyError(f"category #{i} is missing a field: {exc}") from exc
            if not _SLUG_RE.match(category.slug):
                raise TaxonomyError(f"slug {category.slug!r} is not lower-case ASCII-with-dashes")
            categories.append(category)
        taxonomy = cls(version=str(raw["version"]), categories=tuple(categories))
        taxonomy._check_unique()
        return taxonomy

    @classmethod
    def load(cls, path: str | Path | None = None) -> Taxonomy:
        """Loads a taxonomy file; without a path, the packaged default."""
        if path is None:
            text = resources.files("snapcat.data").joinpath("taxonomy.yaml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls.from_dict(yaml.safe_load(text))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "categories": [asdict(c) for c in self.categories]}

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(
            yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False), "utf-8"
        )

    def _check_unique(self) -> None:
        seen: dict[str, str] = {}
        for category in self.categories:
            for key in self._keys(category):
                if key in seen and seen[key] != category.slug:
                    raise TaxonomyError(
                        f"name {key!r} is ambiguous: {seen[key]} and {category.slug}"
                    )
                seen[key] = category.slug

    @staticmethod
    def _keys(category: Category) -> set[str]:
        return {_fold(category.slug), _fold(category.name), _fold(category.label)}

    # ----------------------------------------------------------------------------- queries
    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(c.slug for c in self.categories)

    @property
    def trainable_slugs(self) -> tuple[str, ...]:
        return tuple(c.slug for c in self.categories if c.trainable)

    def __getitem__(self, slug: str) -> Category:
        for category in self.categories:
            if category.slug == slug:
                return category
        raise KeyError(slug)

    def resolve(self, name: str) -> str | None:
        """Maps a slug, English name or Korean label (escaped or not) to its slug, else None."""
        key = _fold(unescape_label(name.strip()))
        if not key:
            return None
        for category in self.categories:
            if key in self._keys(category):
                return category.slug
        return None

    def resolve_path(self, parts: Sequence[str]) -> tuple[str, int] | None:
        """Resolves the leading directory components of a relative path to a category.

        Returns the slug and how many components named it (a nested Korean label takes several),
        preferring the longest match so ``도서/티켓/음반`` is never read as a folder ``도서``.
        """
        longest = max((c.label.count("/") + 1 for c in self.categories), default=1)
        for n in range(min(longest, len(parts)), 0, -1):
            slug = self.resolve("/".join(parts[:n]))
            if slug is not None:
                return slug, n
        return None

    def class_order(self, present: Iterable[str] | None = None) -> list[str]:
        """The class index order of a model: trainable slugs in taxonomy order.

        With ``present``, only those slugs (a dataset need not cover every category); the order is
        still the taxonomy's, never the order in which data happened to be listed.
        """
        wanted = None if present is None else set(present)
        unknown = set() if wanted is None else wanted - set(self.trainable_slugs)
        if unknown:
            raise TaxonomyError(f"not trainable categories of this taxonomy: {sorted(unknown)}")
        return [s for s in self.trainable_slugs if wanted is None or s in wanted]

    def table(self) -> str:
        """A plain-text table for people (``snapcat taxonomy``)."""
        rows = [("#", "slug", "label", "name", "trainable")]
        index = 0
        for category in self.categories:
            shown = str(index) if category.trainable else "-"
            index += category.trainable
            rows.append(
                (
                    shown,
                    category.slug,
                    category.label,
                    category.name,
                    "yes" if category.trainable else "no",
                )
            )
        widths = [max(_display_width(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for r, row in enumerate(rows):
            cells = [cell + " " * (widths[i] - _display_width(cell)) for i, cell in enumerate(row)]
            lines.append("  ".join(cells).rstrip())
            if r == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(f"taxonomy version {self.version}: {len(self.trainable_slugs)} trainable")
        return "\n".join(lines)


def _display_width(text: str) -> int:
    """Terminal columns: Hangul and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
