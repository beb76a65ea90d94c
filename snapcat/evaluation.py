"""``snapcat evaluate``: measures an exported model exactly as it will be served, and gates it.

Predictions come from the SavedModel's serving signature (:class:`snapcat.export.ServingModel`)
fed the prepared canonical bytes, i.e. the same graph and the same input TF Serving will see.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
from tqdm import tqdm

from snapcat import storage
from snapcat.metrics import GateConfig, classification_metrics, gate, topk_indices
from snapcat.model_info import MODEL_CARD_FILE, taxonomy_path
from snapcat.taxonomy import Taxonomy

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Evaluation cannot run as asked (empty split, unreadable baseline, ...)."""


@dataclass(frozen=True)
class EvaluateConfig:
    data: str
    model: str
    output: str
    split: str = "test"
    baseline: str | None = None  # a previous metrics.json (the production model's)
    gate: GateConfig = field(default_factory=GateConfig)
    batch_size: int = 32
    gallery_per_class: int = 8
    progress: bool = True


def load_baseline(uri: str | None) -> dict | None:
    if not uri:
        return None
    try:
        with fsspec.open(uri, "r", encoding="utf-8") as handle:
            baseline = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read baseline metrics {uri}: {exc}") from exc
    if not {"top1", "top3"} <= set(baseline):
        raise EvaluationError(f"baseline {uri} has no top1/top3: is it a snapcat metrics.json?")
    return baseline


def evaluate(config: EvaluateConfig) -> dict:
    from snapcat.export import ServingModel, update_model_card
    from snapcat.report import write_report
    from snapcat.shards import read_split

    storage.require_complete(config.data, "prepared dataset")
    baseline = load_baseline(config.baseline)
    records = read_split(config.data, config.split)
    if not records:
        raise EvaluationError(f"{config.data} has no photos in the {config.split!r} split")
    served = ServingModel(config.model)
    info = served.info
    unknown = sorted({r["slug"] for r in records} - set(info.classes))
    if unknown:
        log.warning("the model cannot predict %s: those photos count as misses", unknown)

    probabilities, seconds = _predict_all(served, records, config)
    taxonomy = Taxonomy.load(taxonomy_path(served.version_dir))
    present = set(info.classes) | {r["slug"] for r in records}
    label_order = [s for s in taxonomy.slugs if s in present]
    true_slugs = [r["slug"] for r in records]
    metrics = classification_metrics(true_slugs, probabilities, list(info.classes), label_order)

    blessed, reasons = gate(metrics, baseline, config.gate)
    card_path = Path(served.version_dir, MODEL_CARD_FILE)
    card = json.loads(card_path.read_text("utf-8")) if card_path.exists() else {}
    metrics.update(
        split=config.split,
        blessed=blessed,
        reasons=reasons,
        gate=config.gate.to_dict(),
        baseline={"uri": config.baseline, "top1": baseline["top1"], "top3": baseline["top3"]}
        if baseline
        else None,
        # the serving signature's time per photo (decode included) at this batch size on this
        # machine: a cost figure to compare candidates by, measured where they were evaluated
        ms_per_image=1000.0 * seconds / len(records),
        model={
            "parameters": card.get("result", {}).get("parameters"),
            "version_dir": served.version_dir,
            "version": info.version,
            "backbone": info.backbone,
            "mode": card.get("training", {}).get("mode"),
            "image_size": info.image_size,
            "classes": list(info.classes),
        },
    )

    gallery = misclassified_gallery(
        records, probabilities, list(info.classes), config.gallery_per_class
    )
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), "utf-8")
    history = Path(config.model, "training", "history.csv")
    write_report(out, metrics, taxonomy, gallery, history if history.exists() else None)
    update_model_card(
        served.version_dir,
        evaluation={
            k: metrics[k] for k in ("split", "n", "top1", "top3", "macro_f1", "blessed", "reasons")
        },
    )
    return metrics


def _predict_all(served, records: list[dict], config: EvaluateConfig) -> tuple[np.ndarray, float]:
    """Probabilities for every record, and the seconds the serving signature took (the first
    batch, which traces the graph, is timed again afterwards so one-off work is not counted)."""
    batches = [
        records[i : i + config.batch_size] for i in range(0, len(records), config.batch_size)
    ]
    outputs, seconds = [], 0.0
    for index, batch in enumerate(
        tqdm(batches, desc=f"evaluating {config.split}", unit="batch", disable=not config.progress)
    ):
        started = time.perf_counter()
        outputs.append(served.predict([r["image"] for r in batch]))
        if index > 0:
            seconds += time.perf_counter() - started
    started = time.perf_counter()
    served.predict([r["image"] for r in batches[0]])
    seconds += time.perf_counter() - started
    return np.concatenate(outputs), seconds


def misclassified_gallery(
    records: list[dict], probabilities: np.ndarray, classes: list[str], per_class: int
) -> dict[str, list[dict]]:
    """Per true category, the misclassified photos the model was most confident about: the ones
    worth a person's look first (label noise or a real confusion)."""
    top = topk_indices(probabilities, 3)
    wrong: dict[str, list[dict]] = {}
    for record, row, probs in zip(records, top, probabilities, strict=True):
        predicted = classes[row[0]]
        if predicted == record["slug"]:
            continue
        wrong.setdefault(record["slug"], []).append(
            {
                "image": record["image"],
                "source": record["source"],
                "true": record["slug"],
                "top3": [(classes[i], float(probs[i])) for i in row],
            }
        )
    return {
        slug: sorted(items, key=lambda x: -x["top3"][0][1])[:per_class]
        for slug, items in sorted(wrong.items())
    }
