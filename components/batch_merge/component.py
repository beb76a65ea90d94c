"""Batch merge: every shard's results -> one results.jsonl, and (optionally) the listings ranked
by how probably they were posted in the wrong category (``snapcat audit --predictions``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output


def batch_merge(
    results: Input[list[Dataset]],
    rank_disagreements: bool,
    merged: Output[Dataset],
    summary: Output[Markdown],
):
    """Concatenates the shards' ``results.jsonl`` in shard order into ``merged/results.jsonl``;
    with ``rank_disagreements`` and photos that carry a category, writes the audit's
    ``label_issues.csv`` and ``gallery.html`` into ``merged/audit``."""
    import json
    import pathlib

    from snapcat.audit.run import AuditConfig, read_predictions, run_audit
    from snapcat.batch.sharding import merge_results

    ordered = sorted(results, key=lambda r: r.metadata.get("shard", 0))
    output = pathlib.Path(merged.path, "results.jsonl")
    counts = merge_results([pathlib.Path(r.path, "results.jsonl") for r in ordered], output)
    text = [
        "# Batch prediction\n",
        f"{counts['photos']} photos in {len(ordered)} shards: {counts['errors']} unreadable, "
        f"{counts['confident']} confident, {counts['disagreements']} where the model disagrees "
        "with the given category.\n",
    ]
    if rank_disagreements and read_predictions(str(output))[0]:
        audit = run_audit(
            AuditConfig(output=str(pathlib.Path(merged.path, "audit")), predictions=str(output))
        )
        counts["probably_wrong_category"] = audit["mislabel"]
        text.append(
            f"\n{audit['mislabel']} listings probably posted in the wrong category, "
            f"{audit['ambiguous']} ambiguous: see audit/label_issues.csv and audit/gallery.html.\n"
        )
    merged.metadata.update(**counts)
    pathlib.Path(summary.path).write_text("".join(text), "utf-8")
    print(json.dumps(counts))


def build(image: str):
    return dsl.component(batch_merge, base_image=image, install_kfp_package=False)
