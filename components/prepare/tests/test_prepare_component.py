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
    }
    assert {name: out.type for name, out in spec.outputs.items()} == {
        "dataset": "system.Dataset@0.0.1",
        "summary": "system.Markdown@0.0.1",
    }
    assert spec.implementation.container.image == "example.org/train:1"


def test_runs_alone_with_kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    task = build("python:3.11")(
        input_uri=str(REPO / "data" / "sample"),
        image_size=71,
        seed=0,
        test_fraction=0.2,
        validation_fraction=0.1,
        min_images_per_class=10,
        data_version="files=1;sha256=0",
    )
    dataset = Path(task.outputs["dataset"].path)
    stats = json.loads((dataset / "stats.json").read_text())
    assert stats["image_size"] == 71 and stats["accepted"] > 300
    assert (dataset / "_SUCCESS").exists()
    assert "# Prepared dataset" in Path(task.outputs["summary"].path).read_text()
    assert task.outputs["dataset"].metadata["classes"] == stats["classes"]
    assert task.outputs["dataset"].metadata["data_version"] == "files=1;sha256=0"
