"""Deploy component: interface (its run is covered by the pipeline's local end-to-end test)."""

from components.deploy import build


def test_interface():
    spec = build("example.org/train:1").component_spec
    assert spec.inputs["model"].type == "system.Model@0.0.1"
    assert {"isvc_name", "isvc_namespace", "canary_percent", "dry_run"} <= set(spec.inputs)
    assert {n: o.type for n, o in spec.outputs.items()} == {"manifest": "system.Artifact@0.0.1"}
