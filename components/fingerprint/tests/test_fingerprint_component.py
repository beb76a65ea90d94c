"""Fingerprint component: its interface, and real runs of it alone through kfp.local."""

from pathlib import Path

from kfp import local

from components.fingerprint import build
from snapcat.dataset.sources import fingerprint

REPO = Path(__file__).resolve().parents[3]


def test_interface():
    spec = build("example.org/light:1").component_spec
    assert set(spec.inputs) == {"input_uri", "data_version", "relabel", "exclude"}
    assert {n: o.type for n, o in spec.outputs.items()} == {"Output": "String"}
    assert spec.implementation.container.image == "example.org/light:1"


def test_runs_alone_with_kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    sample = str(REPO / "data" / "sample")
    listed = build("python:3.11")(input_uri=sample, data_version="")
    assert listed.output == fingerprint(sample) and listed.output.startswith("files=")
    named = build("python:3.11")(input_uri=sample, data_version="2026-12-01")
    assert named.output == "2026-12-01"  # an explicit data version wins


def test_an_edited_review_changes_the_version(tmp_path):
    """The review's CSVs are part of prepare's cache key, by content: editing one at the same
    path changes the version, under a release name too."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    sample = str(REPO / "data" / "sample")
    exclude = tmp_path / "exclude.csv"
    exclude.write_text("path\nplants/plants_001.jpg\n")
    first = build("python:3.11")(input_uri=sample, data_version="", exclude=str(exclude)).output
    assert first.startswith(fingerprint(sample) + ";review=")
    exclude.write_text("path\nplants/plants_002.jpg\n")
    edited = build("python:3.11")(input_uri=sample, data_version="", exclude=str(exclude)).output
    assert edited.startswith(fingerprint(sample) + ";review=") and edited != first
    named = build("python:3.11")(input_uri=sample, data_version="v7", relabel=str(exclude)).output
    assert named.startswith("v7;review=") and named != "v7;" + edited.split(";")[-1]
