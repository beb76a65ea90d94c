"""Batch merge component: its interface (the local pipeline run executes it)."""

from components.batch_merge import build


def test_interface():
    spec = build("example.org/train:1").component_spec
    assert set(spec.inputs) == {"results", "rank_disagreements"}
    assert spec.inputs["results"].is_artifact_list
    assert {name: out.type for name, out in spec.outputs.items()} == {
        "merged": "system.Dataset@0.0.1",
        "summary": "system.Markdown@0.0.1",
    }
