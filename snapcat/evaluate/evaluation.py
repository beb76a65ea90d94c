"""``snapcat evaluate``: measures an exported model exactly as it will be served, and gates it.

Predictions come from the SavedModel's serving signature (:class:`snapcat.train.export.ServingModel`)
fed the prepared canonical bytes, i.e. the same graph and the same input TF Serving will see.

With ``baseline_model`` (the production model's URI) both models answer the same photos in the
same run and the gate reads paired differences (:mod:`snapcat.evaluate.paired`). A stored
``metrics.json`` (``baseline_metrics``) is only the fallback: its figures come from whatever
photos production was evaluated on, and metrics.json and the report label them so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
from tqdm import tqdm

from snapcat import storage
from snapcat.contract.model_info import MODEL_CARD_FILE, taxonomy_path
from snapcat.contract.taxonomy import Taxonomy
from snapcat.errors import SnapcatError
from snapcat.evaluate.gate import GateConfig, verdict
from snapcat.evaluate.metrics import (
    calibration_metrics,
    calibration_summary,
    classification_metrics,
    topk_indices,
)
from snapcat.evaluate.paired import Outcomes, compare, disagreements, ece_interval

log = logging.getLogger(__name__)


class EvaluationError(SnapcatError, ValueError):
    """Evaluation cannot run as asked (empty split, unreadable baseline, ...)."""


@dataclass(frozen=True)
class EvaluateConfig:
    data: str
    model: str
    output: str
    split: str = "test"
    baseline_model: str | None = None  # the production model (MODEL_DIR or a version, any URI)
    baseline_metrics: str | None = None  # fallback: a previous metrics.json (other photos)
    baseline_lookup: str | None = None  # how the baseline was found (said first in the reasons)
    gate: GateConfig = field(default_factory=GateConfig)
    batch_size: int = 32
    gallery_per_class: int = 8
    disagreements: int = 24  # photos per side where exactly one of the two models is right
    progress: bool = True


FALLBACK_NOTE = (
    "figures from a stored metrics.json, measured on the photos production was evaluated on, "
    "not on this run's; not a paired comparison (pass the production model to compare on the "
    "same photos)"
)


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


@contextlib.contextmanager
def local_model(uri: str) -> Iterator[str]:
    """A model folder TensorFlow can load: a local one as it is, an object-store one (``s3://``,
    ``gs://``: an InferenceService's storageUri) copied version-only into a temporary folder."""
    from snapcat.contract.model_info import resolve_version_dir

    try:
        version_dir = resolve_version_dir(uri)
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read baseline model {uri}: {exc}") from exc
    if not storage.is_remote(version_dir):
        yield version_dir
        return
    with tempfile.TemporaryDirectory(prefix="snapcat-baseline-") as tmp:
        fs, path = fsspec.core.url_to_fs(version_dir)
        target = f"{tmp}/{path.rstrip('/').rsplit('/', 1)[-1]}"
        try:
            fs.get(path.rstrip("/") + "/", target + "/", recursive=True)
        except OSError as exc:
            raise EvaluationError(f"cannot copy baseline model {uri}: {exc}") from exc
        yield target


def find_production_model(
    isvc_name: str, isvc_namespace: str, **connection
) -> tuple[str | None, str]:
    """The live InferenceService's model URI, or None and why not (no cluster reachable, no such
    service, a canary in progress): then the caller falls back to a stored metrics.json."""
    from snapcat.rollout import RolloutError, production_model_uri

    ref = f"InferenceService {isvc_namespace}/{isvc_name}"
    try:
        uri = production_model_uri(isvc_name, isvc_namespace, **connection)
    except RolloutError as exc:
        return None, f"production model not read from {ref}: {exc}"
    return uri, f"production model read from the live {ref}: {uri}"


def _model_summary(served, card: dict | None = None) -> dict:
    info = served.info
    return {
        "parameters": (card or {}).get("result", {}).get("parameters"),
        "version_dir": served.version_dir,
        "version": info.version,
        "backbone": info.backbone,
        "mode": (card or {}).get("training", {}).get("mode"),
        "image_size": info.image_size,
        "classes": list(info.classes),
    }


def evaluate(config: EvaluateConfig) -> dict:
    from snapcat.dataset.shards import read_split
    from snapcat.evaluate.report import write_report
    from snapcat.train.export import ServingModel, update_model_card

    storage.require_complete(config.data, "prepared dataset")
    stored_baseline = None if config.baseline_model else load_baseline(config.baseline_metrics)
    records = read_split(config.data, config.split)
    if not records:
        raise EvaluationError(f"{config.data} has no photos in the {config.split!r} split")
    served = ServingModel(config.model)
    info = served.info
    unknown = sorted({r["slug"] for r in records} - set(info.classes))
    if unknown:
        log.warning("the model cannot predict %s: those photos count as misses", unknown)
    probabilities, seconds = _predict_all(served, records, config, "candidate")
    taxonomy = Taxonomy.load(taxonomy_path(served.version_dir))
    true_slugs = [r["slug"] for r in records]

    champion = None
    if config.baseline_model:
        with local_model(config.baseline_model) as baseline_dir:
            champion = ServingModel(baseline_dir)
            champion_probabilities, _ = _predict_all(champion, records, config, "production")
            champion_summary = _model_summary(champion)
            champion_summary["version_dir"] = config.baseline_model

    present = set(info.classes) | set(true_slugs) | set(champion.info.classes if champion else ())
    label_order = [s for s in taxonomy.slugs if s in present]
    metrics = classification_metrics(true_slugs, probabilities, list(info.classes), label_order)
    metrics["calibration"] = calibration_metrics(
        probabilities,
        _label_indices(true_slugs, info.classes),
        info.temperature,
        info.confidence_threshold,
        list(info.classes),
    )
    candidate_labels = _label_indices(true_slugs, info.classes)
    metrics["calibration"]["ece_ci95"] = ece_interval(
        probabilities,
        candidate_labels,
        resamples=config.gate.resamples,
        rng=np.random.default_rng(config.gate.seed),
    )
    metrics["test_set"] = photo_set_fingerprint(records, config.split)

    pairs = None
    if champion is not None:
        champion_metrics = classification_metrics(
            true_slugs, champion_probabilities, list(champion.info.classes), label_order
        )
        mine = Outcomes.of(true_slugs, probabilities, list(info.classes))
        theirs = Outcomes.of(true_slugs, champion_probabilities, list(champion.info.classes))
        champion_labels = _label_indices(true_slugs, champion.info.classes)
        comparison = compare(
            true_slugs, mine, theirs, config.gate,
            calibration=((probabilities, candidate_labels),
                         (champion_probabilities, champion_labels)),
        )  # fmt: skip
        champion_calibration = calibration_metrics(
            champion_probabilities,
            champion_labels,
            champion.info.temperature,
            champion.info.confidence_threshold,
            list(champion.info.classes),
        )
        pairs = disagreements(records, mine, theirs, config.disagreements)
        baseline = {
            "source": "model",
            "uri": config.baseline_model,
            "model": champion_summary,
            **{k: champion_metrics[k] for k in ("n", "top1", "top3", "macro_f1", "per_class")},
            "ece": champion_calibration["ece"],
        }
    else:
        comparison = None
        baseline = None
        if stored_baseline:
            baseline = {
                "source": "stored-metrics",
                "uri": config.baseline_metrics,
                "n": stored_baseline.get("n"),
                "split": stored_baseline.get("split"),
                "top1": stored_baseline["top1"],
                "top3": stored_baseline["top3"],
                "ece": (stored_baseline.get("calibration") or {}).get("ece"),
                "note": FALLBACK_NOTE,
            }

    blessed, reasons = verdict(
        metrics, config.gate, comparison=comparison, stored_baseline=stored_baseline
    )
    if comparison is None and stored_baseline:
        reasons.insert(0, f"FALLBACK baseline: {FALLBACK_NOTE}")
    if config.baseline_lookup:
        reasons.insert(0, config.baseline_lookup)
    card_path = Path(served.version_dir, MODEL_CARD_FILE)
    card = json.loads(card_path.read_text("utf-8")) if card_path.exists() else {}
    fitted = card.get("calibration") or {}
    metrics["calibration"]["fitted"] = {
        k: fitted.get(k)
        for k in (
            "fitted_on",
            "photos",
            "uncalibrated_reason",
            "target_precision",
            "validation_precision_lower_bound",
        )
    }
    metrics.update(
        split=config.split,
        blessed=blessed,
        reasons=reasons,
        gate=config.gate.to_dict(),
        baseline=baseline,
        comparison=comparison,
        # the serving signature's time per photo (decode included) at this batch size on this
        # machine: a cost figure to compare candidates by, measured where they were evaluated
        ms_per_image=1000.0 * seconds / len(records),
        model=_model_summary(served, card),
    )

    gallery = misclassified_gallery(
        records, probabilities, list(info.classes), config.gallery_per_class
    )
    explain_gallery(served, gallery, list(info.classes))
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), "utf-8")
    history = Path(config.model, "training", "history.csv")
    write_report(out, metrics, taxonomy, gallery, history if history.exists() else None, pairs)
    update_model_card(
        served.version_dir,
        evaluation={
            **{
                k: metrics[k]
                for k in ("split", "n", "top1", "top3", "macro_f1", "blessed", "reasons")
            },
            "calibration": calibration_summary(metrics["calibration"]),
        },
    )
    return metrics


def photo_set_fingerprint(records: list[dict], split: str) -> dict:
    """Which photos were scored, by content: SHA-256 over the sorted ``sha256 slug`` lines of the
    split's records (each record's ``sha256`` is its original file's). Two evaluations with the
    same fingerprint scored the same photos with the same labels; ``snapcat compare`` refuses to
    rank runs whose fingerprints differ."""
    import hashlib

    lines = sorted(f"{r['sha256']} {r['slug']}" for r in records)
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return {"split": split, "n": len(records), "sha256": digest}


def _label_indices(true_slugs: list[str], classes) -> np.ndarray:
    """Column index of each photo's category in a model's output (-1: the model lacks it)."""
    return np.array([classes.index(s) if s in classes else -1 for s in true_slugs])


def _predict_all(
    served, records: list[dict], config: EvaluateConfig, what: str = "model"
) -> tuple[np.ndarray, float]:
    """Probabilities for every record, and the seconds the serving signature took (the first
    batch, which traces the graph, is timed again afterwards so one-off work is not counted)."""
    batches = [
        records[i : i + config.batch_size] for i in range(0, len(records), config.batch_size)
    ]
    outputs, seconds = [], 0.0
    for index, batch in enumerate(
        tqdm(
            batches,
            desc=f"evaluating {what} on {config.split}",
            unit="batch",
            disable=not config.progress,
        )
    ):
        started = time.perf_counter()
        outputs.append(served.predict([r["image"] for r in batch]))
        if index > 0:
            seconds += time.perf_counter() - started
    started = time.perf_counter()
    served.predict([r["image"] for r in batches[0]])
    seconds += time.perf_counter() - started
    return np.concatenate(outputs), seconds


def explain_gallery(served, gallery: dict[str, list[dict]], classes: list[str]) -> None:
    """Adds to each gallery photo the Grad-CAM overlay of its (wrong) top-1 category, computed
    by the version's own ``explain`` signature, the one TF Serving answers ``:explain`` with
    (:mod:`snapcat.train.gradcam`): the reader sees whether the object or the background made
    the model say it. A model exported before the signature gets no overlays."""
    from snapcat.imaging.heat_overlay import overlay_png

    items = [item for per_class in gallery.values() for item in per_class]
    if not items or not served.explains:
        return
    asked = [classes.index(item["top3"][0][0]) for item in items]
    for start in range(0, len(items), 16):
        batch = items[start : start + 16]
        answer = served.explain([item["image"] for item in batch], asked[start : start + 16])
        for item, heat in zip(batch, answer["heat_map"], strict=True):
            item["overlay"] = overlay_png(item["image"], heat.tolist())


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
