"""The batch prediction pipeline: compiled structure (split -> ParallelFor of predict -> merge),
the committed spec up to date, and a real run through kfp.local whose merged output equals
``snapcat predict``'s on the same photos."""

from __future__ import annotations

import builtins
from pathlib import Path

import _fake_kfp
import pytest
import yaml
from _batch_fixtures import export_tiny_model, photo_folder

from pipelines import batch_prediction_pipeline as batch
from snapcat.batch.results import read_lines
from snapcat.cli import main

fake_kfp = _fake_kfp.fake_kfp  # the fixture, for this module's tests
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
        "`snapcat batch-pipeline compile --output pipelines/batch_prediction_pipeline.yaml`"
    )


def test_cli_compile_writes_the_committed_spec(tmp_path, capsys):
    assert main(["batch-pipeline", "compile", "--output", str(tmp_path / "b.yaml")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'b.yaml'}\n"
    fresh = list(yaml.safe_load_all((tmp_path / "b.yaml").read_text()))
    assert fresh == list(yaml.safe_load_all(batch.DEFAULT_PACKAGE.read_text()))


SUBMIT = ["batch-pipeline", "submit"]
GIVEN = ["--param", "model_uri=s3://models/listing-category", "--param", "input_uri=s3://ph/2026"]


def test_submit_creates_a_run_with_typed_parameters(fake_kfp, capsys):
    host, requests = fake_kfp
    argv = [*SUBMIT, "--host", host, "--run-name", "weekly-audit", *GIVEN]
    assert main([*argv, "--param", "shard_count=16", "--param", "rank_disagreements=false"]) == 0
    assert "run run-1 submitted" in capsys.readouterr().out
    (body,) = [b for m, p, b in requests if p == "/apis/v2beta1/runs"]
    assert body["display_name"] == "weekly-audit"
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "snapcat-batch-prediction"
    assert body["runtime_config"]["parameters"] == {
        "model_uri": "s3://models/listing-category",
        "input_uri": "s3://ph/2026",
        "shard_count": 16,
        "rank_disagreements": False,
    }
    # a recurring run without a name is named after the batch pipeline
    assert main([*SUBMIT, "--host", host, "--schedule", "0 0 4 * * *", *GIVEN]) == 0
    (recurring,) = [b for m, p, b in requests if p == "/apis/v2beta1/recurringruns"]
    assert recurring["display_name"] == "snapcat-batch-prediction-scheduled"
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["--param", "input_uri=s3://ph/2026"], "missing --param model_uri=..."),
        ([*GIVEN, "--param", "model_uri=runs/model"], "--param model_uri=runs/model: a path on"),
        ([*GIVEN, "--param", "shards=3"], "--param shards: the pipeline has no such parameter"),
        ([*GIVEN, "--param", "shard_count=many"], "--param shard_count=many: not a valid int"),
    ],
)
def test_submit_refuses_what_a_cluster_cannot_run_in_one_line(params, message, capsys):
    """Nothing is contacted: the host is a closed port, and each refusal comes before it."""
    assert main([*SUBMIT, "--host", "http://127.0.0.1:9", *params]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snapcat batch-pipeline: error: ") and message in err, err
    assert err.count("\n") == 1


def test_submit_dry_run_prints_the_run_with_its_defaults(capsys):
    argv = [*SUBMIT, "--dry-run", "--host", "http://127.0.0.1:9", *GIVEN, "--parallelism", "4"]
    assert main(argv) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["dry_run"] is True and shown["host"] == "http://127.0.0.1:9"
    assert shown["parameters"] == {
        "shard_count": 8,
        "batch_size": batch.DEFAULT_BATCH_SIZE,
        "rank_disagreements": True,
        "model_uri": "s3://models/listing-category",
        "input_uri": "s3://ph/2026",
    }
    assert set(shown["deadlines_seconds"]) == {"batch-split", "batch-predict", "batch-merge"}


@pytest.mark.slow
def test_local_run_equals_snapcat_predict(tmp_path, capsys, monkeypatch):
    """``snapcat batch-pipeline run-local``, paths relative to the caller's folder."""
    model = export_tiny_model(tmp_path / "model" / "listing-category")
    photos = tmp_path / "photos"
    photo_folder(photos, per_category=2)
    print_before = builtins.print
    monkeypatch.chdir(tmp_path)
    argv = ["batch-pipeline", "run-local", "--workdir", "run", "--param", "input_uri=photos"]
    argv += ["--param", "model_uri=model/listing-category", "--param", "shard_count=2"]
    assert main([*argv, "--param", "batch_size=2"]) == 0
    assert builtins.print is print_before  # kfp.local's threads leave no indenting print behind
    out = capsys.readouterr().out.split("local batch pipeline run finished:\n")[-1]
    found = dict(line.split(None, 1) for line in out.splitlines())
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
