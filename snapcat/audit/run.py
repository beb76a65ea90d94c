"""``snapcat audit``: a prepared dataset, or batch prediction output, to ranked label issues.

- **Prepared dataset** (``--data``): every photo of every split, frozen Lite0 features
  (:mod:`snapcat.audit.features`), k-fold out-of-sample probabilities and cleanlab's ranking
  (:mod:`snapcat.audit.ranking`).
- **Batch prediction output** (``--predictions results.jsonl``): the lines with a given
  category; the served model's probabilities (the ``scores`` of each line) are out of sample for
  the catalogue already, so they go to the same ranking: listings probably posted in the wrong
  category come first.

Both write ``label_issues.csv``, ``gallery.html`` and ``audit.json`` (counts, method) to the
output folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snapcat.audit.gallery import AuditRow, write_csv, write_gallery
from snapcat.audit.ranking import MISLABEL, Ranked, out_of_sample_probabilities, rank_issues
from snapcat.contract.taxonomy import Taxonomy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditConfig:
    output: str
    data: str | None = None  # a prepared dataset
    predictions: str | None = None  # batch prediction output (results.jsonl)
    folds: int = 5
    seed: int = 0
    gallery_size: int = 200  # photos shown in the gallery (the CSV has every issue)
    weights: str = "imagenet"  # the frozen backbone's weights ("none": tests only)


def issue_rows(
    ranked: Ranked, paths: list[str], labels: np.ndarray, classes: list[str], images=None
) -> list[AuditRow]:
    """The photos with an issue, worst label first."""
    return [
        AuditRow(
            path=paths[i],
            given=classes[labels[i]],
            suggested=classes[ranked.suggested[i]],
            quality=float(ranked.quality[i]),
            issue=ranked.issue[i],
            image=images[i] if images is not None else None,
        )
        for i in ranked.order
        if ranked.issue[i]
    ]


def audit_dataset(config: AuditConfig) -> tuple[list[AuditRow], dict]:
    from snapcat.audit.features import extract_features, load_dataset

    photos = load_dataset(config.data)
    stats = json.loads(Path(config.data, "stats.json").read_text("utf-8"))
    log.info("extracting frozen features of %d photos", len(photos.sources))
    features = extract_features(photos.images, stats["image_size"], config.weights)
    probabilities = out_of_sample_probabilities(
        features, photos.labels, len(photos.classes), config.folds, config.seed
    )
    ranked = rank_issues(photos.labels, probabilities)
    rows = issue_rows(ranked, photos.sources, photos.labels, photos.classes, photos.images)
    method = (
        f"{config.folds}-fold logistic regression on frozen EfficientNet-Lite0 features, cleanlab"
    )
    return rows, {"photos": len(photos.sources), "method": method}


def read_predictions(path: str) -> tuple[list[dict], list[str]]:
    """The lines of a results file that carry a category the model knows, and the model's
    classes (the ``scores`` keys, in order)."""
    from snapcat.batch.results import read_lines

    lines = [line for line in read_lines(path) if "scores" in line and line.get("category")]
    if not lines:
        return [], []
    classes = list(lines[0]["scores"])
    known = [line for line in lines if line["category"] in lines[0]["scores"]]
    if len(known) < len(lines):
        log.warning(
            "%d lines name a category the model does not predict: not audited",
            len(lines) - len(known),
        )
    return known, classes


def audit_predictions(config: AuditConfig) -> tuple[list[AuditRow], dict]:
    from snapcat import storage
    from snapcat.errors import UserError

    lines, classes = read_predictions(config.predictions)
    if not lines:
        raise UserError(
            f"{config.predictions}: no predicted line carries a category: run snapcat predict "
            "on a manifest with a category column (or a folder per category)"
        )
    index = {slug: i for i, slug in enumerate(classes)}
    labels = np.asarray([index[line["category"]] for line in lines], np.int64)
    probabilities = np.asarray([[line["scores"][c] for c in classes] for line in lines])
    ranked = rank_issues(labels, probabilities + 1e-9)
    rows = issue_rows(ranked, [line["id"] for line in lines], labels, classes)
    for row in rows[: config.gallery_size]:  # thumbnails of the photos the gallery shows
        uri = next(line["uri"] for line in lines if line["id"] == row.path)
        try:
            row.image = storage.read_bytes(uri)
        except (OSError, ValueError):
            row.image = None
    return rows, {"photos": len(lines), "method": "the served model's probabilities, cleanlab"}


def run_audit(config: AuditConfig) -> dict:
    from snapcat.errors import UserError

    if (config.data is None) == (config.predictions is None):
        raise UserError("give one of --data (a prepared dataset) or --predictions (results.jsonl)")
    rows, summary = audit_dataset(config) if config.data else audit_predictions(config)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    summary["mislabel"] = sum(r.issue == MISLABEL for r in rows)
    summary["ambiguous"] = len(rows) - summary["mislabel"]
    write_csv(rows, out / "label_issues.csv")
    taxonomy = Taxonomy.load()
    labels = {slug: taxonomy[slug].label for slug in taxonomy.slugs}
    summary["source"] = config.data or config.predictions
    write_gallery(
        rows[: config.gallery_size],
        out / "gallery.html",
        labels=labels,
        title="Label audit",
        summary=summary,
    )
    (out / "audit.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), "utf-8")
    return summary
