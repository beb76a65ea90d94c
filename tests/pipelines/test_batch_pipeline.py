"""The batch prediction pipeline: compiled structure (split -> ParallelFor of predict -> merge),
the committed spec up to date, and a real run through kfp.local whose merged output equals
``snapcat predict``'s on the same photos."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import yaml
from _batch_fixtures import export_tiny_model, photo_folder

from pipelines import batch_prediction_pipeline as batch
from snapcat.batch.results import read_lines
from snapcat.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = batch.compile_pipeline(tmp_path_factory.mktemp("spec") / "batch.yaml")
    return yaml.safe_load_all(path.read_text())


def test_split_fans_out_over_shards_and_merge_collects(spec):
    pipeline, platform = spec
    tasks = pipeline["root"]["dag"]["tasks"]
    assert {"batch-split", "batch-merge"} <= set(tasks) and len(tasks) == 3
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    iterator = loop["parameterIterator"]["items"]["inputParameter"]
    assert "batch-split" in str(loop["inputs"]) and iterator
    inner = pipeline["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"batch-predict"}
    assert inner["batch-predict"]["retryPolicy"]["maxRetryCount"] == 3
    merge = tasks["batch-merge"]
    assert merge["inputs"]["artifacts"]["results"]["taskOutputArtifact"]["producerTask"].startswith(
        "for-loop"
    )
    executors = pipeline["deploymentSpec"]["executors"]
    assert "snapcat-pipeline" in executors["exec-batch-split"]["container"]["image"]
    assert "snapcat-train" in executors["exec-batch-predict"]["container"]["image"]


def test_committed_spec_is_up_to_date(tmp_path):
    fresh = list(yaml.safe_load_all(batch.compile_pipeline(tmp_path / "b.yaml").read_text()))
    committed = list(yaml.safe_load_all(batch.DEFAULT_PACKAGE.read_text()))
    assert fresh == committed, (
        "pipelines/batch_prediction_pipeline.yaml is stale: run "
        "`python -m pipelines.batch_prediction_pipeline compile`"
    )


@pytest.mark.slow
def test_local_run_equals_snapcat_predict(tmp_path):
    model = export_tiny_model(tmp_path / "model" / "listing-category")
    photos = tmp_path / "photos"
    photo_folder(photos, per_category=2)
    print_before = builtins.print
    found = batch.run_local(
        tmp_path / "run", model_uri=str(model), input_uri=str(photos), shard_count=2, batch_size=2
    )
    assert builtins.print is print_before  # kfp.local's threads leave no indenting print behind
    merged = {line["id"]: line for line in read_lines(Path(found["merged"], "results.jsonl"))}
    assert main(
        ["predict", "--model", str(model), "--input", str(photos), "--output",
         str(tmp_path / "direct.jsonl"), "--no-progress"]
    ) == 0  # fmt: skip
    direct = {line["id"]: line for line in read_lines(tmp_path / "direct.jsonl")}
    assert sorted(merged) == sorted(direct) and len(merged) == 9  # 8 photos + the broken one
    for photo_id, line in direct.items():
        assert [c["slug"] for c in merged[photo_id].get("categories", [])] == [
            c["slug"] for c in line.get("categories", [])
        ]
        assert merged[photo_id].get("error") == line.get("error")
        assert merged[photo_id].get("confident") == line.get("confident")
    summary = Path(found["summary"]).read_text()
    assert "9 photos in 2 shards" in summary and "1 unreadable" in summary
    assert (Path(found["merged"]) / "audit" / "label_issues.csv").exists()
