"""``snapcat feedback collect``: the sellers' final categories as training data for ``prepare``.

Writes ``OUTPUT/manifest.csv`` (``path,category`` plus where each row came from), the photos it
names under ``OUTPUT/photos/`` and ``OUTPUT/agreement.json`` (per model version: how often sellers
kept the top-1 / a top-3 suggestion). One row per distinct photo: a photo suggested several times
keeps its latest final category. Categories that are not trainable ("buying", "other") and
predictions whose photo was never logged are counted, not written.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from snapcat.contract.taxonomy import Taxonomy
from snapcat.feedback.store import FeedbackStore

MANIFEST = "manifest.csv"
AGREEMENT = "agreement.json"


@dataclass
class CollectSummary:
    rows: int = 0
    labelled: int = 0
    duplicates: int = 0
    not_trainable: int = 0
    without_photo: int = 0
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"{self.rows} photos with sellers' categories ({self.labelled} answers; "
            f"{self.duplicates} repeated photos, {self.not_trainable} not trainable, "
            f"{self.without_photo} without a logged photo)"
        ]
        for version, a in sorted(self.agreement.items()):
            lines.append(
                f"  model version {version}: {a['answers']:.0f} answers, top-1 agreement "
                f"{a['top1_rate']:.1%}, top-3 agreement {a['top3_rate']:.1%}"
            )
        return "\n".join(lines)


def collect(store_dir: str, output: str, *, taxonomy: Taxonomy | None = None,
            overwrite: bool = False) -> CollectSummary:  # fmt: skip
    taxonomy = taxonomy or Taxonomy.load()
    trainable = set(taxonomy.trainable_slugs)
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it")
    store = FeedbackStore(store_dir)
    summary = CollectSummary()
    latest: dict[Path, tuple[str, str, str]] = {}  # photo -> (category, prediction_id, version)
    counts: dict[str, list[int]] = {}
    try:
        for item in store.labelled():
            summary.labelled += 1
            tally = counts.setdefault(item.model_version, [0, 0, 0])
            tally[0] += 1
            tally[1] += item.suggested[:1] == [item.category]
            tally[2] += item.category in item.suggested[:3]
            if item.category not in trainable:
                summary.not_trainable += 1
            elif item.photo is None:
                summary.without_photo += 1
            else:
                summary.duplicates += item.photo in latest
                latest[item.photo] = (item.category, item.prediction_id, item.model_version)
    finally:
        store.close()
    summary.agreement = {
        v: {"answers": n, "top1": t1, "top3": t3, "top1_rate": t1 / n, "top3_rate": t3 / n}
        for v, (n, t1, t3) in counts.items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (staging / "photos").mkdir()
        with open(staging / MANIFEST, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "category", "prediction_id", "model_version"])
            for photo, (category, pid, version) in latest.items():
                shutil.copyfile(photo, staging / "photos" / photo.name)
                writer.writerow([f"photos/{photo.name}", category, pid, version])
        summary.rows = len(latest)
        (staging / AGREEMENT).write_text(json.dumps(summary.agreement, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
