"""The audit's outputs: ``label_issues.csv`` (ranked, worst first) and ``gallery.html``.

The CSV is what a reviewer edits: keep the rows to correct, change ``suggested_label`` where the
audit's guess is wrong, and give it to ``snapcat prepare --relabel`` (rows to relabel) or
``--exclude`` (rows to drop). The gallery shows each flagged photo (an embedded thumbnail: the
page is one self-contained file) with its given and suggested label and score. Each row may carry
a heat map (``AuditRow.heatmap``, a data URI or path of an overlay image): the column appears
only when some row has one, so explanations can be added without changing this module's callers.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import jinja2

from snapcat.evaluate.hangul_font import CSS_FONT_STACK, css_font_face

CSV_FIELDS = ("path", "given_label", "suggested_label", "label_quality", "issue")
THUMBNAIL_PX = 160
_FONT_FACE_SLOT = "/* embedded Hangul font */"

_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("snapcat", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
).get_template("audit.html.j2")


@dataclass
class AuditRow:
    path: str  # the photo's path in the input (prepare's display path) or a listing id
    given: str  # slug
    suggested: str  # slug
    quality: float  # cleanlab's label quality score (probability of the given label)
    issue: str  # "mislabel" / "ambiguous"
    image: bytes | None = None  # photo bytes for the thumbnail (None: no thumbnail)
    heatmap: str | None = None  # overlay image URI for a future heat-map column (None: none)


def write_csv(rows: list[AuditRow], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow((row.path, row.given, row.suggested, f"{row.quality:.4f}", row.issue))


def thumbnail_uri(image: bytes | None) -> str | None:
    """A small JPEG data URI of a photo (None when it cannot be decoded)."""
    if not image:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as picture:
            picture = picture.convert("RGB")
            picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=80)
    except Exception:  # a thumbnail is decoration: a photo Pillow cannot open gets none
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_gallery(
    rows: list[AuditRow], path: Path, *, labels: dict[str, str], title: str, summary: dict
) -> None:
    """The HTML gallery of ``rows`` (already ranked and cut to what a person reviews)."""
    shown = [
        {
            "rank": rank,
            "path": row.path,
            "given": row.given,
            "given_label": labels.get(row.given, row.given),
            "suggested": row.suggested,
            "suggested_label": labels.get(row.suggested, row.suggested),
            "quality": row.quality,
            "issue": row.issue,
            "thumbnail": thumbnail_uri(row.image),
            "heatmap": row.heatmap,
        }
        for rank, row in enumerate(rows, 1)
    ]
    html = _TEMPLATE.render(
        font_stack=CSS_FONT_STACK,
        font_face_slot=_FONT_FACE_SLOT,
        title=title,
        rows=shown,
        summary=summary,
        heatmaps=any(r["heatmap"] for r in shown),
    )
    # Korean labels render on a machine without CJK fonts: the page embeds the glyphs it uses
    html = html.replace(_FONT_FACE_SLOT, css_font_face(html), 1)
    path.write_text(html, "utf-8")
