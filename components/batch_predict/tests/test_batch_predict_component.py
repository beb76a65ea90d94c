"""Batch predict component: its interface (the local pipeline run executes it)."""

from components.batch_predict import build


def test_interface():
    spec = build("example.org/train:1").component_spec
    assert set(spec.inputs) == {"model_uri", "input_uri", "shards", "shard", "batch_size"}
    assert {name: out.type for name, out in spec.outputs.items()} == {
        "results": "system.Dataset@0.0.1"
    }
    assert spec.implementation.container.image == "example.org/train:1"
