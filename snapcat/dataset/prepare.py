"""``snapcat prepare``: a messy folder or bucket of listing photos in, clean training data out.

Every input file ends up accepted, rejected (with a reason, in ``rejected.csv``) or a duplicate
(in ``duplicates.csv``); nothing is silently dropped. Accepted photos are normalized with the
shared :mod:`snapcat.imaging.normalize` module, split by content hash (:mod:`snapcat.dataset.splits`) and written as
sharded TFRecords (:mod:`snapcat.dataset.shards`) with ``stats.json`` and a Markdown summary. The output
folder appears atomically (:func:`snapcat.storage.publish_dir`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from snapcat import storage
from snapcat.contract.image_spec import ImageSpec
from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset import shards
from snapcat.dataset.corrections import apply_corrections
from snapcat.dataset.manifest_policy import NotRegularFile, read_local_regular
from snapcat.dataset.sources import Discovery, SourceItem, discover
from snapcat.dataset.splits import SPLITS, assign_splits, balanced_class_weights
from snapcat.errors import SnapcatError
from snapcat.imaging import normalize as imaging

log = logging.getLogger(__name__)


class PrepareError(SnapcatError, ValueError):
    """The input cannot make a usable dataset; the message says which categories and why."""


@dataclass(frozen=True)
class PrepareConfig:
    input: str
    output: str
    manifest: str | None = None
    image_size: int = 299
    jpeg_quality: int = 90
    seed: int = 0
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    taxonomy: str | None = None
    workers: int = 0  # 0: one per CPU core
    min_images_per_class: int = 10
    min_test_per_class: int = 2
    min_validation_per_class: int = 2
    ignore_unknown: bool = False
    overwrite: bool = False
    max_bytes: int = ImageSpec.max_bytes
    max_pixels: int = ImageSpec.max_pixels
    #: a reviewed label audit (snapcat.dataset.corrections): photos to relabel / to leave out
    relabel: str | None = None
    exclude: str | None = None
    progress: bool = True
    #: Folders / bucket prefixes a manifest may name besides its own (issue 25).
    allow_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A list from argparse's append action or a caller: one value, one form (and hashable).
        object.__setattr__(self, "allow_roots", tuple(self.allow_roots))

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(
            size=self.image_size,
            jpeg_quality=self.jpeg_quality,
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
        )


@dataclass(frozen=True)
class Processed:
    item: SourceItem
    raw_sha256: str | None
    canonical: bytes | None
    reason: str | None
    message: str | None


def _process(task: tuple[SourceItem, ImageSpec]) -> Processed:
    """Runs in a worker process: read, hash, normalize one file."""
    item, spec = task
    try:
        if "://" in item.uri:
            data = storage.read_bytes(item.uri, limit=spec.max_bytes)
        else:  # no FIFO, device or folder: it may have changed since the manifest was checked
            data = read_local_regular(item.uri, spec.max_bytes)
    except NotRegularFile as exc:
        return Processed(item, None, None, "not-a-regular-file", str(exc))
    except FileNotFoundError:
        return Processed(item, None, None, "missing-file", "the file does not exist")
    except OSError as exc:
        return Processed(item, None, None, "unreadable", str(exc))
    raw_sha = hashlib.sha256(data).hexdigest()
    try:
        return Processed(item, raw_sha, imaging.normalize_image(data, spec), None, None)
    except imaging.ImageError as exc:
        return Processed(item, raw_sha, None, exc.reason, str(exc))
    except Exception as exc:  # a decoder bug must cost one file, never the whole run
        return Processed(item, raw_sha, None, "decoder-error", f"{type(exc).__name__}: {exc}")


def _exit_with_parent(prepare_pid: int) -> None:  # pragma: no cover - runs in a worker
    """Worker start-up: the worker ends when ``snapcat prepare`` does, however it ends (a killed
    pool owner otherwise leaves its workers blocked on their task queue for good)."""
    threading.Thread(target=_watch_parent, args=(prepare_pid,), daemon=True).start()


def _watch_parent(prepare_pid: int) -> None:  # pragma: no cover - runs in a worker
    while True:
        time.sleep(1.0)
        try:
            os.kill(prepare_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _normalize_all(items: list[SourceItem], config: PrepareConfig) -> list[Processed]:
    workers = config.workers or os.cpu_count() or 1
    tasks = [(item, config.spec) for item in items]
    bar = dict(total=len(tasks), desc="normalizing", unit="img", disable=not config.progress)
    if workers == 1 or len(tasks) < 2:
        return [_process(t) for t in tqdm(tasks, **bar)]
    # forkserver: safe even when the caller already imported TensorFlow (fork would not be).
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        return list(tqdm(pool.map(_process, tasks, chunksize=8), **bar))


def _deduplicate(
    processed: list[Processed], key, rejected: list[tuple[str, str]], duplicates: list
) -> list[Processed]:
    """Keeps one photo per ``key`` group (the first path); copies filed under different
    categories contradict each other and are all rejected rather than guessed at."""
    groups: dict[str, list[Processed]] = defaultdict(list)
    for p in processed:
        groups[key(p)].append(p)
    kept = []
    for members in groups.values():
        members.sort(key=lambda p: p.item.display)
        if len({p.item.slug for p in members}) > 1:
            rejected.extend((p.item.display, "conflicting-labels") for p in members)
            continue
        fixed = {p.item.split for p in members if p.item.split}
        if len(fixed) > 1:  # one photo fixed to two splits by the manifest
            rejected.extend((p.item.display, "conflicting-splits") for p in members)
            continue
        if fixed and not members[0].item.split:
            members.sort(key=lambda p: (p.item.split is None, p.item.display))
        kept.append(members[0])
        duplicates.extend((p.item.display, members[0].item.display) for p in members[1:])
    return sorted(kept, key=lambda p: p.item.display)


def _check_counts(counts: Counter, named: set[str], minimum: int, when: str) -> None:
    short = {slug: counts.get(slug, 0) for slug in named if counts.get(slug, 0) < minimum}
    if short:
        listed = ", ".join(f"{slug} ({n})" for slug, n in sorted(short.items()))
        raise PrepareError(
            f"categories with fewer than --min-images-per-class={minimum} usable photos "
            f"{when}: {listed}. Add photos, remove the folder, or lower the minimum."
        )


def run_prepare(config: PrepareConfig) -> dict:
    """Prepares the dataset and returns its stats (also written to ``stats.json``)."""
    taxonomy = Taxonomy.load(config.taxonomy)
    storage.ensure_can_publish(config.output, config.overwrite)  # before hours of decoding
    found: Discovery = discover(
        config.input, taxonomy, config.manifest, config.ignore_unknown, config.allow_roots
    )
    corrected = apply_corrections(found.items, taxonomy, config.relabel, config.exclude)
    found.items, found.rejected = corrected.items, found.rejected + corrected.rejected
    trainable_named = {s for s in found.category_dirs if taxonomy[s].trainable}
    _check_counts(
        Counter(i.slug for i in found.items),
        trainable_named,
        config.min_images_per_class,
        "in the input",
    )
    if not found.items:
        raise PrepareError(f"no trainable photos found in {config.input}")
    _say(
        config,
        f"found {len(found.items)} photos in {len({i.slug for i in found.items})} categories "
        f"in {config.input}"
        + (f" ({len(found.rejected)} files refused)" if found.rejected else ""),
    )

    processed = _normalize_all(found.items, config)
    rejected = list(found.rejected)
    rejected += [(p.item.display, p.reason) for p in processed if p.reason]
    messages = {p.item.display: p.message for p in processed if p.reason}
    duplicates: list[tuple[str, str]] = []
    good = [p for p in processed if not p.reason]
    good = _deduplicate(good, lambda p: p.raw_sha256, rejected, duplicates)
    good = _deduplicate(
        good, lambda p: hashlib.sha256(p.canonical).hexdigest(), rejected, duplicates
    )
    _check_counts(
        Counter(p.item.slug for p in good),
        trainable_named,
        config.min_images_per_class,
        "after rejecting unusable photos and duplicates",
    )

    classes = taxonomy.class_order({p.item.slug for p in good})
    if len(classes) < 2:
        raise PrepareError(
            f"a classifier needs at least two trainable categories; the input has "
            f"{len(classes)} ({', '.join(classes) or 'none'}) after rejecting unusable photos "
            "and duplicates. Add photos of at least one more category."
        )
    index = {slug: i for i, slug in enumerate(classes)}
    plan = assign_splits(
        ((p.raw_sha256, p.item.slug, p.item.split) for p in good),
        config.seed,
        config.test_fraction,
        config.validation_fraction,
        min_test=config.min_test_per_class,
        min_validation=config.min_validation_per_class,
    )
    by_split: dict[str, list[shards.Record]] = {s: [] for s in SPLITS}
    assignments = []
    for p in good:
        split = plan.splits[p.raw_sha256]
        by_split[split].append(
            shards.Record(
                p.canonical, index[p.item.slug], p.item.slug, p.raw_sha256, p.item.display
            )
        )
        assignments.append((p.item.display, p.raw_sha256, p.item.slug, split))

    split_counts = {
        split: {slug: sum(r.slug == slug for r in records) for slug in classes}
        for split, records in by_split.items()
    }
    stats = {
        "taxonomy_version": taxonomy.version,
        "image_size": config.image_size,
        "jpeg_quality": config.jpeg_quality,
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        "validation_fraction": config.validation_fraction,
        "min_test_per_class": config.min_test_per_class,
        "min_validation_per_class": config.min_validation_per_class,
        "fixed_splits": sum(1 for p in good if p.item.split),
        "promoted_to_meet_minimums": plan.promoted,
        "classes": classes,
        "splits": split_counts,
        "class_weights": balanced_class_weights(split_counts["train"]),
        "input_files": len(found.items) + len(found.rejected),
        "accepted": len(good),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r for _, r in rejected).items())),
        "duplicates": len(duplicates),
        "skipped_non_trainable": dict(sorted(found.non_trainable.items())),
        "corrections": corrected.summary,
        "absent_categories": [s for s in taxonomy.trainable_slugs if s not in classes],
        "shards": {},
    }
    warnings = [f"{slug}: {why}" for slug, why in sorted(plan.short.items())]
    warnings += [
        f"{slug} has no {split} photos"
        for split in ("validation", "test")
        for slug in classes
        if split_counts[split][slug] == 0
        and slug not in plan.short
        and (config.test_fraction if split == "test" else config.validation_fraction) > 0
    ]
    stats["warnings"] = warnings
    for warning in warnings:
        log.warning(warning)

    _say(config, f"{len(good)} photos kept; writing the shards (TensorFlow loads first)")
    written = tqdm(total=len(good), desc="writing shards", unit="img", disable=not config.progress)
    with storage.publish_dir(config.output, overwrite=config.overwrite) as staging, written:
        for split, records in by_split.items():
            records.sort(key=lambda r: r.sha256)
            stats["shards"][split] = shards.write_split(
                records, staging, split, on_record=lambda: written.update()
            )
        _write_csv(
            staging / "rejected.csv",
            ("path", "reason", "detail"),
            [(path, reason, messages.get(path, "")) for path, reason in sorted(rejected)],
        )
        _write_csv(staging / "duplicates.csv", ("path", "kept_path"), sorted(duplicates))
        _write_csv(staging / "index.csv", ("path", "sha256", "category", "split"), assignments)
        taxonomy.dump(staging / "taxonomy.yaml")
        (staging / "prepare_config.json").write_text(
            json.dumps({k: v for k, v in asdict(config).items() if k != "progress"}, indent=2)
        )
        (staging / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        (staging / "summary.md").write_text(summary_markdown(stats, taxonomy), "utf-8")
    return stats


def _say(config: PrepareConfig, message: str) -> None:
    """A step of a long run, on the terminal beside the progress bars (quiet without them)."""
    if config.progress:
        tqdm.write(message, file=sys.stderr)


def _write_csv(path: Path, header: tuple[str, ...], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def summary_markdown(stats: dict, taxonomy: Taxonomy) -> str:
    """A short human-readable report of a prepared dataset (also the KFP Markdown artifact)."""
    splits = stats["splits"]
    lines = [
        "# Prepared dataset",
        "",
        f"- taxonomy {stats['taxonomy_version']}, {len(stats['classes'])} classes, "
        f"{stats['image_size']} px canonical JPEG (quality {stats['jpeg_quality']}), seed {stats['seed']}",
        f"- input files: {stats['input_files']}; accepted {stats['accepted']}, "
        f"rejected {stats['rejected']}, duplicates {stats['duplicates']}",
        "",
        "| # | category | label | train | validation | test | total | class weight |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for i, slug in enumerate(stats["classes"]):
        counts = [splits[s][slug] for s in SPLITS]
        weight = stats["class_weights"].get(slug, 0)
        lines.append(
            f"| {i} | `{slug}` | {taxonomy[slug].label} | {counts[0]} | {counts[1]} | {counts[2]} "
            f"| {sum(counts)} | {weight:.3f} |"
        )
    totals = [sum(splits[s].values()) for s in SPLITS]
    lines.append(f"| | **total** | | {totals[0]} | {totals[1]} | {totals[2]} | {sum(totals)} | |")
    if "min_test_per_class" in stats:
        promoted = stats.get("promoted_to_meet_minimums") or {}
        lines += [
            "",
            f"Split: stratified per category by content hash, at least "
            f"{stats['min_test_per_class']} test and {stats['min_validation_per_class']} "
            "validation photos per category"
            + (
                " (moved from train to meet them: "
                + ", ".join(f"`{s}` {n}" for s, n in sorted(promoted.items()))
                + ")"
                if promoted
                else ""
            )
            + (
                f"; {stats['fixed_splits']} photos' splits fixed by the manifest"
                if stats.get("fixed_splits")
                else ""
            )
            + ".",
        ]
    if stats["rejected_by_reason"]:
        lines += ["", "## Rejected", "", "| reason | files |", "|---|---:|"]
        lines += [f"| {r} | {n} |" for r, n in stats["rejected_by_reason"].items()]
    if stats["absent_categories"]:
        lines += [
            "",
            "Categories with no photos (not in the model): "
            + ", ".join(f"`{s}`" for s in stats["absent_categories"]),
        ]
    if stats["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in stats["warnings"]]
    return "\n".join(lines) + "\n"
