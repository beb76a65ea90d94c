"""``snapcat predict``'s core: the exported SavedModel over a stream of photos, batch by batch.

Each photo goes through exactly what an online request goes through: the serving normalization
(:func:`snapcat.imaging.normalize.normalize_image`, at the model's own image spec), the
``serving_default`` signature (run in-process, as the local predictor and evaluation run it), and
the transformer's answer shaping (:class:`snapcat.serve.responses.ResponseBuilder`: top-k, scores
rounded as served, ``confident`` by :func:`snapcat.contract.confidence.is_confident` at the
threshold the model carries). So a line equals the online endpoint's answer for the same photo.

Memory is bounded by ``batch_size`` photos: inputs are streamed (:mod:`snapcat.batch.inputs`),
each batch is read and normalized on a few threads, predicted, written and flushed before the
next is read. A photo that cannot be read or decoded gets a line with ``error`` and the run goes
on; a rerun with the same output skips every id already written (:func:`snapcat.batch.results.resume`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from snapcat import storage
from snapcat.batch.inputs import PhotoRef, count_photos, iter_photos
from snapcat.batch.results import ResultWriter, resume
from snapcat.contract.image_spec import ImageSpec
from snapcat.contract.signature import (
    CLASSES_OUTPUT,
    LABELS_OUTPUT,
    NO_THRESHOLD,
    OUTPUT_NAME,
    THRESHOLD_OUTPUT,
    VERSION_OUTPUT,
)
from snapcat.contract.taxonomy import Taxonomy
from snapcat.imaging.normalize import ImageError, normalize_image
from snapcat.serve.responses import ResponseBuilder
from snapcat.serve.transformer_core import DEFAULT_TOP_K

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class PredictConfig:
    model: str  # model folder (highest version) or one version folder; local or a bucket URI
    input: str  # folder, bucket prefix or manifest .csv
    output: str  # results .jsonl (appended to: a rerun resumes)
    batch_size: int = DEFAULT_BATCH_SIZE
    top_k: int = DEFAULT_TOP_K
    workers: int = 4  # threads reading and normalizing a batch's photos
    progress: bool = True
    #: folders or bucket prefixes a manifest may name besides its own (as prepare's --allow-root)
    allow_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.top_k < 1 or self.workers < 1:
            raise ValueError("batch_size, top_k and workers must be at least 1")


@dataclass
class Outcome:
    """One photo after reading and normalization: canonical bytes, or why there are none."""

    ref: PhotoRef
    canonical: bytes | None = None
    error: str | None = None
    detail: str | None = None


def load_photo(ref: PhotoRef, spec: ImageSpec) -> Outcome:
    """Reads and normalizes one photo as the transformer does; never raises."""
    if ref.refused is not None:
        return Outcome(ref, error=ref.refused.reason, detail=str(ref.refused))
    try:
        data = storage.read_bytes(ref.uri, limit=spec.max_bytes)
    except (OSError, ValueError) as exc:
        return Outcome(ref, error="unreadable", detail=f"{type(exc).__name__}: {exc}")
    try:
        return Outcome(ref, canonical=normalize_image(data, spec))
    except ImageError as exc:
        return Outcome(ref, error=exc.reason, detail=str(exc))
    except Exception as exc:  # a decoder failing in a way imaging does not know yet
        return Outcome(ref, error="invalid-image", detail=f"{type(exc).__name__}: {exc}")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def answer_lines(
    outputs: dict[str, np.ndarray], refs: list[PhotoRef], builder: ResponseBuilder
) -> list[dict[str, Any]]:
    """The signature's outputs for ``refs`` as result lines, shaped as the transformer shapes
    its answers."""
    lines = []
    for row, ref in enumerate(refs):
        probabilities = [float(p) for p in outputs[OUTPUT_NAME][row]]
        classes = [_text(c) for c in outputs[CLASSES_OUTPUT][row]]
        labels = (
            [_text(c) for c in outputs[LABELS_OUTPUT][row]] if LABELS_OUTPUT in outputs else classes
        )
        threshold = float(outputs[THRESHOLD_OUTPUT][row]) if THRESHOLD_OUTPUT in outputs else None
        if threshold == NO_THRESHOLD:
            threshold = None
        top = builder.categories(probabilities, classes, labels, min(builder.top_k, len(classes)))
        line: dict[str, Any] = {
            "id": ref.id,
            "categories": top,
            "confident": builder.confident(probabilities, threshold),
            "model_version": _text(outputs[VERSION_OUTPUT][row]),
            # every class's score (the model's class order), for the catalogue audit
            "scores": {c: round(p, 4) for c, p in zip(classes, probabilities, strict=True)},
        }
        if ref.category is not None:
            line["category"] = ref.category
            line["disagrees"] = top[0]["slug"] != ref.category
        line["uri"] = ref.uri
        lines.append(line)
    return lines


def error_line(outcome: Outcome) -> dict[str, Any]:
    line: dict[str, Any] = {"id": outcome.ref.id, "error": outcome.error, "detail": outcome.detail}
    if outcome.ref.category is not None:
        line["category"] = outcome.ref.category
    line["uri"] = outcome.ref.uri
    return line


def _batches(items: Iterable[PhotoRef], size: int) -> Iterator[list[PhotoRef]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def predict_stream(
    model, refs: Iterable[PhotoRef], writer: ResultWriter, config: PredictConfig, bar=None
) -> dict[str, int]:
    """Predicts ``refs`` with a loaded :class:`snapcat.train.export.ServingModel`, writing a line
    per photo; returns counts (predicted, errors)."""
    spec = model.info.spec
    builder = ResponseBuilder(config.top_k)
    counts = {"predicted": 0, "errors": 0}
    with ThreadPoolExecutor(config.workers) as pool:
        for batch in _batches(refs, config.batch_size):
            outcomes = list(pool.map(lambda ref: load_photo(ref, spec), batch))
            good = [o for o in outcomes if o.canonical is not None]
            answered = {}
            if good:
                outputs = model.run([o.canonical for o in good])
                lines = answer_lines(outputs, [o.ref for o in good], builder)
                answered = {id(o): line for o, line in zip(good, lines, strict=True)}
            for outcome in outcomes:  # input order
                line = answered.get(id(outcome)) or error_line(outcome)
                writer.write(line)
                counts["errors" if "error" in line else "predicted"] += 1
            writer.flush()
            if bar is not None:
                bar.update(len(batch))
    return counts


def run_predict(config: PredictConfig) -> dict[str, Any]:
    """Predicts every photo of ``config.input`` not already in ``config.output``."""
    from snapcat.train.export import ServingModel

    taxonomy = Taxonomy.load()
    done = resume(config.output)
    model = ServingModel(config.model)
    total = (
        count_photos(config.input, taxonomy, tuple(config.allow_roots)) if config.progress else None
    )
    todo = (
        r
        for r in iter_photos(config.input, taxonomy, tuple(config.allow_roots))
        if r.id not in done
    )
    bar = tqdm(
        total=None if total is None else max(0, total - len(done)),
        desc="predicting",
        unit="photo",
        disable=not config.progress,
    )
    with ResultWriter(config.output) as writer, bar:
        counts = predict_stream(model, todo, writer, config, bar)
    summary = {
        **counts,
        "skipped": len(done),
        "model_version": str(model.info.version),
        "output": config.output,
    }
    log.info(
        "predicted %d photos (%d errors), %d already in %s",
        counts["predicted"],
        counts["errors"],
        len(done),
        config.output,
    )
    return summary
