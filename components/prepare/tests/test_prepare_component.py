"""Prepare component: its interface, and a real run of it alone through kfp.local."""

import json
from pathlib import Path

from kfp import local

from components.prepare import build

REPO = Path(__file__).resolve().parents[3]


def test_interface():
    component = build("example.org/train:1")
    spec = component.component_spec
    assert set(spec.inputs) == {
        "input_uri",
        "image_size",
        "seed",
        "test_fraction",
        "validation_fraction",
        "min_images_per_class",
        "data_version",
        "relabel",
        "exclude",
        "ignore_unknown",
    }
    assert {name: out.type for name, out in spec.outputs.items()} == {
        "dataset": "system.Dataset@0.0.1",
        "summary": "system.Markdown@0.0.1",
    }
    assert spec.implementation.container.image == "example.org/train:1"


def test_runs_alone_with_kfp_local_and_applies_a_review(tmp_path):
    """A reviewed label audit in the pipeline, as ``snapcat prepare --relabel/--exclude``: one
    photo moved to another category, two left out (named in rejected.csv), counted in the
    artifact's metadata."""
    sample = REPO / "data" / "sample"
    furniture = sorted((sample / "furniture-interior").glob("*.jpg"))
    moved, dropped = furniture[0], furniture[1:3]
    relabel = tmp_path / "relabel.csv"
    relabel.write_text(f"path,suggested_label\nfurniture-interior/{moved.name},digital-devices\n")
    exclude = tmp_path / "exclude.csv"
    exclude.write_text("path\n" + "".join(f"furniture-interior/{p.name}\n" for p in dropped))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    task = build("python:3.11")(
        input_uri=str(sample),
        image_size=71,
        seed=0,
        test_fraction=0.2,
        validation_fraction=0.1,
        min_images_per_class=10,
        data_version="files=1;sha256=0",
        relabel=str(relabel),
        exclude=str(exclude),
    )
    dataset = Path(task.outputs["dataset"].path)
    stats = json.loads((dataset / "stats.json").read_text())
    assert stats["image_size"] == 71 and stats["accepted"] > 300
    metadata = task.outputs["dataset"].metadata
    assert (metadata["relabelled"], metadata["excluded_by_review"]) == (1, 2)
    assert metadata["review_paths_not_found"] == 0
    rejected = (dataset / "rejected.csv").read_text()
    assert all(f"furniture-interior/{p.name}" in rejected for p in dropped)
    assert rejected.count("excluded-by-review") == 2
    index = (dataset / "index.csv").read_text()
    (row,) = [line for line in index.splitlines() if moved.name in line]
    assert row.split(",")[2] == "digital-devices"  # path, sha256, category, split
    assert (dataset / "_SUCCESS").exists()
    assert "# Prepared dataset" in Path(task.outputs["summary"].path).read_text()
    assert task.outputs["dataset"].metadata["classes"] == stats["classes"]
    assert task.outputs["dataset"].metadata["data_version"] == "files=1;sha256=0"
