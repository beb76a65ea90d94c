"""Select component: interface, and its function run on real folders (ranking, copy, verdict)."""

import json

from kfp import dsl

from components.select import build


def test_interface():
    spec = build("example.org/train:1").component_spec
    assert spec.inputs["models"].type == "system.Model@0.0.1"
    assert spec.inputs["models"].is_artifact_list
    assert spec.inputs["evaluations"].is_artifact_list
    assert {n: o.type for n, o in spec.outputs.items()} == {
        "comparison": "system.Markdown@0.0.1",
        "best_model": "system.Model@0.0.1",
        "best_evaluation": "system.Artifact@0.0.1",
        "Output": "Boolean",
    }


def _candidate(root, name, top1, top3, blessed):
    model = dsl.Model(uri=str(root / name / "model"), metadata={"candidate": name})
    (root / name / "model" / "1").mkdir(parents=True)
    (root / name / "model" / "1" / "saved_model.pb").write_text(name)
    evaluation = dsl.Artifact(uri=str(root / name / "eval"), metadata={"candidate": name})
    (root / name / "eval").mkdir()
    metrics = {
        "n": 96,
        "top1": top1,
        "top3": top3,
        "macro_f1": top1 - 0.05,
        "blessed": blessed,
        "ms_per_image": 3.0,
        "model": {"backbone": name.split(":")[0], "mode": name.split(":")[1], "image_size": 224},
    }
    (root / name / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return model, evaluation


def test_the_best_by_top1_goes_on_with_its_own_gate_verdict(tmp_path):
    runs = [
        _candidate(tmp_path, "xception:feature-extraction", 0.61, 0.90, True),
        _candidate(tmp_path, "efficientnet-lite0:two-phase", 0.72, 0.88, False),
        _candidate(tmp_path, "xception:two-phase", 0.72, 0.86, True),
    ]
    out = tmp_path / "out"
    comparison = dsl.Markdown(uri=str(out / "comparison"))
    best_model = dsl.Model(uri=str(out / "best_model"))
    best_evaluation = dsl.Artifact(uri=str(out / "best_evaluation"))
    out.mkdir()
    blessed = build("x").python_func(
        models=[m for m, _ in runs],
        evaluations=[e for _, e in runs],
        comparison=comparison,
        best_model=best_model,
        best_evaluation=best_evaluation,
    )
    # equal top-1: top-3 decides; the best was refused by the gate, so nothing deploys
    best = "efficientnet-lite0:two-phase"
    assert best_model.metadata["candidate"] == best
    assert blessed is False
    assert (out / "best_model" / "1" / "saved_model.pb").read_text() == best
    assert json.loads((out / "best_evaluation" / "metrics.json").read_text())["top1"] == 0.72
    table = (out / "comparison").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "efficientnet-lite0:two-phase",
        "xception:two-phase",
        "xception:feature-extraction",
    ]
    assert "Best: **efficientnet-lite0:two-phase**" in table
