"""Batch split component: its interface, and a real run of it alone through kfp.local."""

import csv
from pathlib import Path

from kfp import local

from components.batch_split import build

REPO = Path(__file__).resolve().parents[3]


def test_interface():
    spec = build("example.org/light:1").component_spec
    assert set(spec.inputs) == {"input_uri", "shard_count"}
    assert {name: out.type for name, out in spec.outputs.items()} == {
        "shards": "system.Dataset@0.0.1",
        "Output": "List",
    }


def test_runs_alone_with_kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    sample = REPO / "data" / "sample"
    task = build("python:3.11")(input_uri=str(sample), shard_count=4)
    assert task.outputs["Output"] == [0, 1, 2, 3]
    shards = Path(task.outputs["shards"].path)
    rows = []
    for index in range(4):
        with open(shards / f"shard-{index:05d}.csv", newline="") as handle:
            rows += list(csv.DictReader(handle))
    photos = sorted(p for p in sample.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in photos)
    assert all(row["category"] == row["id"].split("/")[0] for row in rows)
