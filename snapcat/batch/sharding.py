"""The batch prediction pipeline's plain core: split an input into shard manifests, and merge the
shards' results.

:func:`split_input` streams the input once (a folder, bucket prefix or manifest:
:mod:`snapcat.batch.inputs`) and deals its photos round-robin into ``shard-NNNNN.csv`` manifests
(``id,path,category`` with absolute paths or URIs), so each shard is a manifest ``snapcat
predict`` reads like any other and shards are of equal size within one photo. Round-robin rather
than contiguous ranges: one pass, no count first, and a folder's slow corner (large photos) is
spread over every shard. :func:`merge_results` concatenates the shards' JSONL outputs in shard
order and counts what they hold.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from snapcat.batch.inputs import iter_photos
from snapcat.batch.results import read_lines
from snapcat.contract.taxonomy import Taxonomy

SHARD_FIELDS = ("id", "path", "category")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.csv"


def split_input(input_uri: str, out_dir: str | Path, shard_count: int) -> list[int]:
    """Writes up to ``shard_count`` shard manifests into ``out_dir``; returns the indices of the
    non-empty ones (fewer photos than shards: fewer shards)."""
    if shard_count < 1:
        raise ValueError("shard_count must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handles, writers, sizes = [], [], [0] * shard_count
    try:
        for index in range(shard_count):
            handles.append(open(out_dir / shard_name(index), "w", newline="", encoding="utf-8"))  # noqa: SIM115
            writers.append(csv.writer(handles[-1]))
            writers[-1].writerow(SHARD_FIELDS)
        for position, ref in enumerate(iter_photos(input_uri, Taxonomy.load())):
            index = position % shard_count
            writers[index].writerow((ref.id, ref.uri, ref.category or ""))
            sizes[index] += 1
    finally:
        for handle in handles:
            handle.close()
    for index in range(shard_count):
        if not sizes[index]:
            (out_dir / shard_name(index)).unlink()
    (out_dir / "shards.json").write_text(json.dumps({"sizes": sizes}))
    return [index for index in range(shard_count) if sizes[index]]


def merge_results(shard_results: list[str | Path], output: str | Path) -> dict:
    """Concatenates results files (complete lines only) into ``output``; returns counts."""
    counts = {"photos": 0, "errors": 0, "disagreements": 0, "confident": 0}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as merged:
        for path in shard_results:
            for line in read_lines(path):
                merged.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                counts["photos"] += 1
                counts["errors"] += "error" in line
                counts["disagreements"] += bool(line.get("disagrees"))
                counts["confident"] += bool(line.get("confident"))
    return counts
