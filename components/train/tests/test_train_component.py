"""Train component: interface (its run is covered by the pipeline's local end-to-end test)."""

from components.train import build


def test_interface():
    spec = build("example.org/train:1").component_spec
    assert spec.inputs["dataset"].type == "system.Dataset@0.0.1"
    assert {
        "candidate",
        "weights",
        "image_size",
        "epochs",
        "head_epochs",
        "batch_size",
        "learning_rate",
        "fine_tune_learning_rate",
        "seed",
        "early_stopping_patience",
        "workspace",
    } <= set(spec.inputs)
    assert {n: o.type for n, o in spec.outputs.items()} == {"model": "system.Model@0.0.1"}
    assert spec.implementation.container.image == "example.org/train:1"
