"""Fingerprint component: its interface, and real runs of it alone through kfp.local."""

from pathlib import Path

from kfp import local

from components.fingerprint import build
from snapcat.dataset.sources import fingerprint

REPO = Path(__file__).resolve().parents[3]


def test_interface():
    spec = build("example.org/light:1").component_spec
    assert set(spec.inputs) == {"input_uri", "data_version"}
    assert {n: o.type for n, o in spec.outputs.items()} == {"Output": "String"}
    assert spec.implementation.container.image == "example.org/light:1"


def test_runs_alone_with_kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    sample = str(REPO / "data" / "sample")
    listed = build("python:3.11")(input_uri=sample, data_version="")
    assert listed.output == fingerprint(sample) and listed.output.startswith("files=")
    named = build("python:3.11")(input_uri=sample, data_version="2026-12-01")
    assert named.output == "2026-12-01"  # an explicit data version wins
