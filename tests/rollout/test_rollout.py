"""``snapcat rollout`` and :mod:`snapcat.rollout`.

Three layers:

- the bodies and their rules, and the ``--dry-run`` output of every command (no cluster, no
  kubeconfig);
- a recorded-contract test: a fake Kubernetes API server on 127.0.0.1 serves the InferenceService
  and plays KServe's controller (revisions, traffic split, readiness); the real ``KServeClient``
  talks to it through a generated kubeconfig, and the exact requests of canary -> promote,
  canary -> rollback and of a canary that never becomes ready (automatic rollback) are asserted;
- ``@pytest.mark.cluster``: the real flow against a cluster with KServe (skipped without
  KUBECONFIG; see docs/deploy.md).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from _fake_kserve import (
    FAST,
    NAME,
    NEW_URI,
    NS,
    OLD_URI,
    PATH,
    TOKEN,
    FakeKServe,
    live_object,
    merge_patch,
)

from snapcat import rollout
from snapcat.cli import main
from snapcat.rollout import RolloutError

REPO_ROOT = Path(__file__).resolve().parents[2]
# the fake_api fixture (a fake Kubernetes API server); _fake_kserve.py holds it for all three
# rollout test modules
pytest_plugins = ["_fake_kserve"]


# ------------------------------------------------------------------------------ bodies
def test_canary_patch_changes_one_model_uri():
    """The transformer reads no model files, so a canary is the predictor's storageUri alone: the
    transformer keeps its single revision and labels each answer by the model that gave it."""
    current = live_object()
    patch = rollout.canary_patch(current, NEW_URI, 10)
    assert patch == {
        "metadata": {"resourceVersion": "7"},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": NEW_URI}}},
    }
    transformer = current["spec"]["transformer"]["containers"][0]
    assert "env" not in transformer or all(e["name"] != "STORAGE_URI" for e in transformer["env"])


@pytest.mark.parametrize("percent", [-1, 100, 150, True, 10.0])
def test_canary_percent_must_be_0_to_99(percent):
    with pytest.raises(RolloutError, match="from 0 to 99"):
        rollout.canary_patch(live_object(), NEW_URI, percent)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("listing-category-v2", "storage initializer can fetch"),
        ("/models/listing-category", "storage initializer can fetch"),
        ("gs://snapcat-models/listing-category/3", "ends in a version folder"),
    ],
)
def test_bad_model_uris_are_user_errors(uri, message):
    with pytest.raises(RolloutError, match=message):
        rollout.canary(NAME, NS, uri, 10, dry_run=True)


def test_canary_of_the_model_already_serving_everything_is_refused():
    with pytest.raises(RolloutError, match="already serves"):
        rollout.canary_patch(live_object(), OLD_URI, 10)
    # ...but re-weighting a running canary of the same model is fine.
    running = live_object(NEW_URI)
    running["spec"]["predictor"]["canaryTrafficPercent"] = 10
    assert (
        rollout.canary_patch(running, NEW_URI, 50)["spec"]["predictor"]["canaryTrafficPercent"]
        == 50
    )


def test_promote_body_removes_the_canary_and_keeps_the_rest():
    current = live_object(NEW_URI)
    for c in ("predictor", "transformer"):
        current["spec"][c]["canaryTrafficPercent"] = 10
    body = rollout.promote_body(current)
    assert "status" not in body and "managedFields" not in body["metadata"]
    assert body["metadata"]["resourceVersion"] == "7"  # a PUT with it fails on a concurrent change
    for c in ("predictor", "transformer"):
        assert "canaryTrafficPercent" not in body["spec"][c]
    expected = copy.deepcopy(current)
    del expected["status"], expected["metadata"]["managedFields"]
    for c in ("predictor", "transformer"):
        del expected["spec"][c]["canaryTrafficPercent"]
    assert body == expected


def test_rollback_patch_is_the_documented_zero_percent():
    assert rollout.rollback_patch(live_object()) == {
        "spec": {"predictor": {"canaryTrafficPercent": 0}}
    }
    predictor_only = live_object()
    del predictor_only["spec"]["transformer"]
    assert rollout.rollback_patch(predictor_only) == {
        "spec": {"predictor": {"canaryTrafficPercent": 0}}
    }
    # a canary an older snapcat started moved the transformer too: rolled back with it
    legacy = live_object()
    for c in ("predictor", "transformer"):
        legacy["spec"][c]["canaryTrafficPercent"] = 10
    assert rollout.rollback_patch(legacy) == {
        "spec": {
            "predictor": {"canaryTrafficPercent": 0},
            "transformer": {"canaryTrafficPercent": 0},
        }
    }


def test_rendered_and_promoted_objects_are_valid_kserve_objects():
    from tools.sdk_roundtrip import problems

    assert problems(rollout.render_inferenceservice(NAME, NS, NEW_URI)) == []
    current = live_object(NEW_URI)
    del current["metadata"]["managedFields"]  # not part of the generated V1ObjectMeta fixture data
    current["spec"]["predictor"]["canaryTrafficPercent"] = 10
    assert problems(rollout.promote_body(current)) == []


def test_standard_mode_is_refused_with_an_explanation():
    current = live_object(deploymentMode="Standard")
    with pytest.raises(RolloutError, match="only splits traffic in Knative mode"):
        rollout.canary(NAME, NS, NEW_URI, 10, dry_run=True, current=current)


def test_canary_needs_a_rolled_out_revision():
    current = live_object()
    del current["status"]["components"]["predictor"]["latestRolledoutRevision"]
    with pytest.raises(RolloutError, match="no rolled-out revision"):
        rollout.canary(NAME, NS, NEW_URI, 10, dry_run=True, current=current)


def test_class_check_compares_model_info(tmp_path, monkeypatch):
    from snapcat.contract import model_info

    def fake_info(uri):
        classes = ("a", "b", "c") if uri.endswith("v1") else ("a", "c", "b")
        return type("Info", (), {"classes": classes, "backbone": "efficientnet-lite0"})()

    monkeypatch.setattr(model_info, "load_model_info", fake_info)
    with pytest.raises(RolloutError, match="different class list"):
        rollout.canary(
            NAME, NS, NEW_URI, 10, dry_run=True, current=live_object(), check_classes=True
        )
    same = NEW_URI.replace("v2", "w2-v1")
    assert rollout.canary(
        NAME, NS, same, 10, dry_run=True, current=live_object(), check_classes=True
    ).request.body


@pytest.mark.parametrize("backbone", ["xception", "efficientnet-lite0"])
def test_canary_warns_when_the_threads_are_sized_for_another_backbone(
    monkeypatch, caplog, backbone
):
    """The shipped predictor is sized for the CPU tier's EfficientNet-Lite0: an Xception canary
    still goes out (it serves correctly) with a warning that names the flags it would want. Read
    with the class check (``--check-classes``), which reads both models already."""
    from snapcat.contract import model_info

    info = type("Info", (), {"backbone": backbone, "classes": ("a", "b")})()
    monkeypatch.setattr(model_info, "load_model_info", lambda uri: info)
    with caplog.at_level("WARNING", logger="snapcat.rollout"):
        result = rollout.canary(
            NAME, NS, NEW_URI, 10, dry_run=True, current=live_object(), check_classes=True
        )
    assert result.request.body
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if backbone == "efficientnet-lite0":
        assert warnings == []
    else:
        assert len(warnings) == 1, warnings
        assert "sized for efficientnet-lite0" in warnings[0]
        assert "--tensorflow_intra_op_parallelism=2" in warnings[0], warnings[0]


def test_status_summary_and_text():
    current = live_object(NEW_URI)
    current["status"]["url"] = f"http://{NAME}.{NS}.example.com"
    current["status"]["components"]["predictor"].update(
        {
            "latestCreatedRevision": f"{NAME}-predictor-00002",
            "latestReadyRevision": f"{NAME}-predictor-00002",
            "traffic": [
                {
                    "revisionName": f"{NAME}-predictor-00002",
                    "percent": 10,
                    "latestRevision": True,
                    "tag": "latest",
                    "url": "http://latest-x",
                },
                {
                    "revisionName": f"{NAME}-predictor-00001",
                    "percent": 90,
                    "latestRevision": False,
                    "tag": "prev",
                },
            ],
        }
    )
    current["spec"]["predictor"]["canaryTrafficPercent"] = 10
    summary = rollout.summarize(current)
    predictor = summary["components"]["predictor"]
    assert summary["ready"] is True
    assert predictor["model_uri"] == NEW_URI
    assert [(t["percent"], t["latest"]) for t in predictor["traffic"]] == [(10, True), (90, False)]
    text = rollout.format_status(summary)
    assert text.isascii()
    assert f"traffic:  10% {NAME}-predictor-00002 (latest, tag latest) http://latest-x" in text
    assert f"traffic:  90% {NAME}-predictor-00001 (tag prev)" in text
    assert "canaryTrafficPercent: 10" in text and f"url: http://{NAME}.{NS}.example.com" in text


def test_kserve_storage_uri_for_pipeline_artifacts(tmp_path):
    assert rollout.kserve_storage_uri("minio://mlpipeline/v2/artifacts/run/model") == (
        "s3://mlpipeline/v2/artifacts/run/model"
    )
    assert rollout.kserve_storage_uri("gs://bucket/run/model/") == "gs://bucket/run/model"
    assert rollout.kserve_storage_uri(str(tmp_path / "model")) == (tmp_path / "model").as_uri()


def test_deploy_canary_dry_run_accepts_a_local_model(tmp_path):
    uri = rollout.kserve_storage_uri(str(tmp_path / "model"))
    text = rollout.deploy_canary(name=NAME, namespace=NS, model_uri=uri, percent=10, dry_run=True)
    body = yaml.safe_load(text)
    assert body["spec"]["predictor"]["model"]["storageUri"] == uri
    with pytest.raises(RolloutError, match="storage initializer"):  # not for a real cluster
        rollout.canary(NAME, NS, uri, 10)


# ------------------------------------------------------------------------------ CLI --dry-run
@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """No kubeconfig anywhere: a dry run must not need one."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["rollout", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_canary_dry_run_prints_the_exact_patch(no_cluster, capsys):
    code, out, _ = run_cli(
        capsys, "canary", "-n", NS, "--model-uri", NEW_URI, "--percent", "10", "--dry-run"
    )
    assert code == 0
    assert out.startswith("# NOT THE EXACT REQUEST: no live object was read")
    assert f"\n# PATCH {PATH}\n# Content-Type: application/merge-patch+json\n" in out
    assumed = rollout.render_inferenceservice(NAME, NS, "gs://CURRENT-MODEL")
    assert yaml.safe_load(out) == rollout.canary_patch(assumed, NEW_URI, 10)
    assert out.isascii()


def test_cli_canary_dry_run_from_the_live_object(no_cluster, capsys, tmp_path):
    current = live_object()
    current["spec"]["transformer"]["containers"][0]["image"] = "ghcr.io/snapcat/snapcat-serve:9.9"
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(current))
    code, out, _ = run_cli(
        capsys, "canary", "-n", NS, "--model-uri", NEW_URI, "--percent", "25", "--dry-run",
        "--current", str(path),
    )  # fmt: skip
    assert code == 0
    assert out.startswith(f"# PATCH {PATH}\n") and "<- live" not in out  # the exact request
    body = yaml.safe_load(out)
    assert body == rollout.canary_patch(current, NEW_URI, 25)
    assert body["metadata"]["resourceVersion"] == "7"
    assert "transformer" not in body["spec"]  # the live transformer (image 9.9) is left alone


def test_cli_promote_rollback_status_dry_runs(no_cluster, capsys):
    code, out, _ = run_cli(capsys, "promote", "-n", NS, "--model-uri", NEW_URI, "--dry-run")
    assert code == 0 and f"\n# PUT {PATH}\n# Content-Type: application/json\n" in out
    assert yaml.safe_load(out) == rollout.render_inferenceservice(NAME, NS, NEW_URI)
    # Built from the shipped base, not the live object: said, and each live-decided line marked.
    assert out.startswith("# NOT THE EXACT REQUEST") and "--current live.yaml" in out
    marked = [line.split(":")[0].strip() for line in out.splitlines() if "<- live value" in line]
    assert {"storageUri", "minReplicas", "maxReplicas", "cpu", "memory", "name"} <= set(marked)
    assert f"namespace: {NS}\n" in out  # what the command itself decides is not marked

    code, out, _ = run_cli(capsys, "rollback", "-n", NS, "--dry-run")
    assert code == 0 and f"\n# PATCH {PATH}\n" in out
    assert yaml.safe_load(out) == {
        "spec": {
            "predictor": {"canaryTrafficPercent": 0},
        }
    }

    code, out, _ = run_cli(capsys, "status", "-n", NS, "--dry-run")
    assert code == 0 and out == f"# GET {PATH}\n"


def test_cli_status_of_a_saved_object(no_cluster, capsys, tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(live_object()))
    code, out, _ = run_cli(capsys, "status", "-n", NS, "--current", str(path))
    assert code == 0 and f"InferenceService {NS}/{NAME}" in out and "ready: True" in out
    code, out, _ = run_cli(capsys, "status", "-n", NS, "--current", str(path), "--yaml")
    assert yaml.safe_load(out)["components"]["predictor"]["model_uri"] == OLD_URI


@pytest.mark.parametrize(
    "argv, message",
    [
        (["canary", "--model-uri", NEW_URI, "--percent", "100"], "from 0 to 99"),
        (["canary", "--model-uri", "s3://b/m/1", "--percent", "5"], "version folder"),
        (["promote", "--model-uri", "gs://other/model"], "is rolling out"),
        (["canary", "--model-uri", NEW_URI, "--percent", "5", "--timeout", "0"], "positive"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(no_cluster, capsys, tmp_path, argv, message):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(live_object(NEW_URI)))
    code, out, err = run_cli(capsys, *argv, "-n", NS, "--dry-run", "--current", str(path))
    assert code == 2 and out == ""
    assert err.startswith("snapcat rollout: error: ") and message in err
    assert "Traceback" not in err


def test_cli_without_cluster_configuration_is_a_user_error(no_cluster, capsys, monkeypatch):
    from kserve.utils import utils

    monkeypatch.setattr(utils, "is_running_in_k8s", lambda: False)  # CI may run in a pod
    code, _, err = run_cli(capsys, "status", "-n", NS)
    assert code == 2 and "no usable Kubernetes configuration" in err and "--dry-run" in err


def test_dry_run_imports_no_cluster_libraries(tmp_path):
    """A dry run works where neither a cluster nor KServe/kubernetes are needed (local pipeline)."""
    code = (
        "import sys; from snapcat.cli import main; "
        f"rc = main(['rollout', 'canary', '-n', 'x', '--model-uri', '{NEW_URI}', '--percent', '5',"
        " '--dry-run']); "
        "assert rc == 0; loaded = [m for m in ('kserve', 'kubernetes') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "canaryTrafficPercent: 5" in result.stdout


@pytest.mark.timeout(120)
def test_contract_canary_then_promote(fake_api):
    fake = FakeKServe(live_object())
    kubeconfig = fake_api(fake)
    cluster = rollout.Cluster.connect(kubeconfig)
    start = fake.current()

    result = rollout.canary(NAME, NS, NEW_URI, 10, cluster=cluster, **FAST)
    assert fake.calls() == ["GET", "PATCH", "GET", "GET"]
    assert all(r["path"] == PATH for r in fake.requests)
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)
    patch = fake.requests[1]
    assert patch["content_type"] == "application/merge-patch+json"
    assert patch["body"] == rollout.canary_patch(start, NEW_URI, 10)
    assert patch["body"]["metadata"] == {"resourceVersion": "1"}
    assert result.request.body == patch["body"] and result.sent
    predictor = result.status["components"]["predictor"]
    assert [(t["revision"], t["percent"]) for t in predictor["traffic"]] == [
        (f"{NAME}-predictor-00002", 10),
        (f"{NAME}-predictor-00001", 90),
    ]
    # one URI moved: the transformer has no model of its own and keeps its single revision
    assert result.status["components"]["transformer"]["model_uri"] is None
    assert [t["revision"] for t in result.status["components"]["transformer"]["traffic"]] == [
        f"{NAME}-transformer-00001"
    ]

    fake.requests.clear()
    before_promote = fake.current()
    result = rollout.promote(NAME, NS, model_uri=NEW_URI, cluster=cluster, **FAST)
    assert fake.calls() == ["GET", "PUT", "GET", "GET"]
    put = fake.requests[1]
    assert put["content_type"] == "application/json"
    expected = copy.deepcopy(before_promote)
    del expected["status"], expected["metadata"]["managedFields"]
    del expected["spec"]["predictor"]["canaryTrafficPercent"]
    assert put["body"] == expected
    for c, revision in (("predictor", 2), ("transformer", 1)):
        comp = result.status["components"][c]
        assert comp["traffic"] == [
            {
                "revision": f"{NAME}-{c}-{revision:05d}",
                "percent": 100,
                "latest": True,
                "tag": None,
                "url": None,
            }
        ]
        assert comp["latestRolledoutRevision"] == f"{NAME}-{c}-{revision:05d}"
    assert "canaryTrafficPercent" not in fake.obj["spec"]["predictor"]
    assert fake.obj["spec"]["predictor"]["model"]["storageUri"] == NEW_URI


@pytest.mark.timeout(120)
def test_contract_canary_then_rollback(fake_api):
    fake = FakeKServe(live_object())
    cluster = rollout.Cluster.connect(fake_api(fake))
    rollout.canary(NAME, NS, NEW_URI, 20, cluster=cluster, **FAST)
    fake.requests.clear()

    result = rollout.rollback(NAME, NS, cluster=cluster, **FAST)
    assert fake.calls() == ["GET", "PATCH", "GET", "GET"]
    assert fake.writes() == [
        (
            "PATCH",
            {
                "spec": {
                    "predictor": {"canaryTrafficPercent": 0},
                }
            },
        )
    ]
    traffic = result.status["components"]["predictor"]["traffic"]
    assert [(t["revision"], t["percent"], t["latest"]) for t in traffic] == [
        (f"{NAME}-predictor-00002", 0, True),
        (f"{NAME}-predictor-00001", 100, False),
    ]
    (transformer,) = result.status["components"]["transformer"]["traffic"]
    assert (transformer["revision"], transformer["percent"]) == (f"{NAME}-transformer-00001", 100)
    # Promoting a rolled-back canary needs a new canary first.
    with pytest.raises(RolloutError, match="was rolled back"):
        rollout.promote(NAME, NS, cluster=cluster, **FAST)
    # A second rollback is harmless; a new canary replaces the rejected model.
    rollout.rollback(NAME, NS, cluster=cluster, **FAST)
    third = "gs://snapcat-models/listing-category-v3"
    result = rollout.canary(NAME, NS, third, 10, cluster=cluster, **FAST)
    traffic = result.status["components"]["predictor"]["traffic"]
    assert [(t["revision"], t["percent"]) for t in traffic] == [
        (f"{NAME}-predictor-00003", 10),
        (f"{NAME}-predictor-00001", 90),
    ]


@pytest.mark.timeout(120)
def test_contract_canary_that_never_becomes_ready_is_rolled_back(fake_api):
    fake = FakeKServe(live_object(), never_ready=True)
    cluster = rollout.Cluster.connect(fake_api(fake))
    started = time.monotonic()
    with pytest.raises(RolloutError) as caught:
        rollout.canary(NAME, NS, NEW_URI, 10, cluster=cluster, poll=0.02, timeout=0.5)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"canary of {NEW_URI} did not happen within 0.5s" in message
    assert "Ready=False (RevisionMissing: revision failed to start)" in message
    assert (
        f"Rolled back: canaryTrafficPercent is 0, all traffic goes to the previous revision ({NAME}-predictor-00001)"
        in message
    )
    writes = fake.writes()
    assert [method for method, _ in writes] == ["PATCH", "PATCH"]
    assert writes[0][1]["spec"]["predictor"]["model"] == {"storageUri": NEW_URI}
    assert writes[1][1] == {
        "spec": {
            "predictor": {"canaryTrafficPercent": 0},
        }
    }
    assert set(fake.calls()) == {"GET", "PATCH"} and len(fake.requests) < 100
    fake.reconcile()
    (served,) = [t for t in fake.status["components"]["predictor"]["traffic"] if t["percent"]]
    assert served == {
        "revisionName": f"{NAME}-predictor-00001",
        "percent": 100,
        "latestRevision": False,
        "tag": "prev",
        "url": f"http://prev-{NAME}-predictor.{NS}.example.com",
    }
    assert "canaryTrafficPercent" not in fake.obj["spec"]["transformer"]


@pytest.mark.timeout(120)
def test_contract_failed_model_load_rolls_back_without_waiting(fake_api):
    fake = FakeKServe(live_object(), failed_load=True)
    cluster = rollout.Cluster.connect(fake_api(fake))
    started = time.monotonic()
    with pytest.raises(RolloutError, match="BlockedByFailedLoad.*Rolled back"):
        rollout.canary(NAME, NS, NEW_URI, 10, cluster=cluster, poll=0.01, timeout=60)
    assert time.monotonic() - started < 10
    assert [m for m, _ in fake.writes()] == ["PATCH", "PATCH"]


@pytest.mark.timeout(120)
def test_contract_without_the_kserve_sdk(fake_api, monkeypatch):
    """The pipeline image has the kubernetes client but not KServe: the same requests go out."""
    monkeypatch.setitem(sys.modules, "kserve.api.kserve_client", None)  # import fails
    fake = FakeKServe(live_object())
    cluster = rollout.Cluster.connect(fake_api(fake))
    assert type(cluster.kserve).__name__ == "_KubernetesOnly"
    start = fake.current()
    rollout.canary(NAME, NS, NEW_URI, 10, cluster=cluster, **FAST)
    rollout.rollback(NAME, NS, cluster=cluster, **FAST)
    assert fake.calls() == ["GET", "PATCH", "GET", "GET", "GET", "PATCH", "GET", "GET"]
    assert fake.writes() == [
        ("PATCH", rollout.canary_patch(start, NEW_URI, 10)),
        ("PATCH", rollout.rollback_patch(start)),
    ]
    with pytest.raises(RolloutError, match="does not exist"):
        rollout.status("other", NS, cluster=cluster)


@pytest.mark.timeout(120)
def test_contract_api_errors_are_user_errors(fake_api, capsys):
    fake = FakeKServe(live_object())
    kubeconfig = fake_api(fake)
    cluster = rollout.Cluster.connect(kubeconfig)
    with pytest.raises(RolloutError, match="does not exist: deploy it first"):
        rollout.status("other", NS, cluster=cluster)
    # A concurrent change between the read and the write: 409 from the resourceVersion guard.
    stale = fake.current()
    fake.write(merge_patch(fake.obj, {"metadata": {"labels": {"touched": "yes"}}}))
    with pytest.raises(RolloutError, match="changed while this patch was prepared"):
        rollout.canary(NAME, NS, NEW_URI, 10, cluster=cluster, current=stale, **FAST)
    # Through the CLI: exit 2 and the message, no traceback.
    code = main(["rollout", "status", "--name", "other", "-n", NS, "--kubeconfig", kubeconfig])
    _, err = capsys.readouterr()
    assert code == 2 and "does not exist" in err and "Traceback" not in err


@pytest.mark.timeout(120)
def test_cli_against_the_fake_cluster(fake_api, capsys):
    fake = FakeKServe(live_object())
    kubeconfig = fake_api(fake)
    common = ["-n", NS, "--kubeconfig", kubeconfig, "--context", "fake", "--poll", "0.01"]
    code = main(["rollout", "canary", "--model-uri", NEW_URI, "--percent", "30", *common])
    out, _ = capsys.readouterr()
    assert code == 0
    assert f"traffic:  30% {NAME}-predictor-00002 (latest, tag latest)" in out
    assert f"traffic:  70% {NAME}-predictor-00001 (tag prev)" in out
    code = main(["rollout", "status", "-n", NS, "--kubeconfig", kubeconfig])
    out, _ = capsys.readouterr()
    assert code == 0 and f"model: {NEW_URI}" in out and "canaryTrafficPercent: 30" in out
    code = main(["rollout", "promote", "--model-uri", NEW_URI, *common])
    out, _ = capsys.readouterr()
    assert code == 0 and f"traffic: 100% {NAME}-predictor-00002 (latest)" in out
    code = main(["rollout", "promote", *common])
    out, _ = capsys.readouterr()
    assert code == 0 and "nothing to promote" in out
    assert not rollout.promote(NAME, NS, cluster=rollout.Cluster.connect(kubeconfig)).sent
    code = main(["rollout", "rollback", *common])
    _, err = capsys.readouterr()
    assert code == 2 and "no canary in progress" in err
    assert [m for m, _ in fake.writes()] == ["PATCH", "PUT"]


# ------------------------------------------------------------------------------ real cluster
@pytest.mark.cluster
@pytest.mark.timeout(3600)
def test_real_cluster_canary_promote_and_rollback():
    """canary -> rollback, canary -> promote, and a canary that cannot start, on a real KServe.

    Needs KUBECONFIG (a cluster with KServe in Knative mode, see docs/deploy.md). By default a
    predictor-only InferenceService serves KServe's public TF sample models; set
    SNAPCAT_CLUSTER_MODEL_URI / SNAPCAT_CLUSTER_CANARY_URI for others, and
    SNAPCAT_CLUSTER_TRANSFORMER=1 to include the snapcat transformer (its image must be pullable and
    both URIs must be snapcat models), SNAPCAT_CLUSTER_SERVICE_ACCOUNT for storage credentials
    (default: none). SNAPCAT_CLUSTER_NAMESPACE (default "default") must exist.
    """
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: no cluster to run against")
    namespace = os.environ.get("SNAPCAT_CLUSTER_NAMESPACE", "default")
    first = os.environ.get(
        "SNAPCAT_CLUSTER_MODEL_URI", "gs://kfserving-examples/models/tensorflow/flowers"
    )
    second = os.environ.get(
        "SNAPCAT_CLUSTER_CANARY_URI", "gs://kfserving-examples/models/tensorflow/flowers-2"
    )
    name = f"snapcat-rollout-{uuid.uuid4().hex[:6]}"
    cluster = rollout.Cluster.connect(os.environ["KUBECONFIG"])
    body = rollout.render_inferenceservice(name, namespace, first)
    if os.environ.get("SNAPCAT_CLUSTER_TRANSFORMER") != "1":
        del body["spec"]["transformer"]
    for component in body["spec"].values():  # public models need no storage credentials
        account = os.environ.get("SNAPCAT_CLUSTER_SERVICE_ACCOUNT")
        if account:
            component["serviceAccountName"] = account
        else:
            del component["serviceAccountName"]
    api = cluster.kserve.api_instance
    # TF Serving's configuration, which kustomize generates from manifests/base/tfserving/
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api.api_client)
    files = REPO_ROOT / "manifests" / "base" / "tfserving"
    (volume,) = [v for v in body["spec"]["predictor"]["volumes"] if "configMap" in v]
    config_map = f"{name}-tfserving"
    volume["configMap"]["name"] = config_map
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": config_map},
            "data": {f.name: f.read_text() for f in sorted(files.glob("*.txt"))},
        },
    )
    api.create_namespaced_custom_object(
        rollout.GROUP, rollout.VERSION, namespace, rollout.PLURAL, body
    )
    try:
        components = tuple(c for c in rollout.COMPONENTS if c in body["spec"])
        rollout.wait_for(
            cluster,
            name,
            namespace,
            rollout.all_traffic_to_latest(1, components),
            timeout=900,
            poll=5,
            what="first deployment",
        )
        wait = {"cluster": cluster, "timeout": 900, "poll": 5}
        result = rollout.canary(name, namespace, second, 20, **wait)
        assert rollout.canary_percent_of(cluster.get(name, namespace)) == 20
        shares = {t["percent"] for t in result.status["components"]["predictor"]["traffic"]}
        assert shares == {20, 80}
        result = rollout.rollback(name, namespace, **wait)
        served = [t for t in result.status["components"]["predictor"]["traffic"] if t["percent"]]
        assert [(t["percent"], t["latest"]) for t in served] == [(100, False)]
        result = rollout.canary(name, namespace, second, 50, **wait)
        result = rollout.promote(name, namespace, model_uri=second, **wait)
        served = [t for t in result.status["components"]["predictor"]["traffic"] if t["percent"]]
        assert [(t["percent"], t["latest"]) for t in served] == [(100, True)]
        with pytest.raises(RolloutError, match="Rolled back"):
            rollout.canary(
                name, namespace, "gs://kfserving-examples/models/does-not-exist", 10,
                cluster=cluster, timeout=240, poll=5,
            )  # fmt: skip
        pinned = rollout.wait_for(
            cluster,
            name,
            namespace,
            rollout.traffic_pinned_to_previous(None, ("predictor",)),
            timeout=300,
            poll=5,
            what="automatic rollback",
        )
        predictor = rollout.summarize(pinned)["components"]["predictor"]
        served = [t for t in predictor["traffic"] if t["percent"]]
        assert [(t["percent"], t["latest"]) for t in served] == [(100, False)]
        assert served[0]["revision"] == predictor["latestRolledoutRevision"]
    finally:
        api.delete_namespaced_custom_object(
            rollout.GROUP, rollout.VERSION, namespace, rollout.PLURAL, name
        )
        core.delete_namespaced_config_map(config_map, namespace)


# ------------------------------------------------------------------------------ the champion
def test_production_model_uri_is_the_live_storage_uri():
    assert rollout.production_model_uri(NAME, NS, current=live_object()) == OLD_URI
    during_canary = rollout.render_inferenceservice(NAME, NS, NEW_URI)
    during_canary["spec"]["predictor"]["canaryTrafficPercent"] = 10
    with pytest.raises(RolloutError, match="10% canary"):
        rollout.production_model_uri(NAME, NS, current=during_canary)


def test_production_model_lookup_without_a_cluster_says_why(no_cluster):
    from snapcat.evaluate.evaluation import find_production_model

    uri, why = find_production_model(NAME, NS)
    assert uri is None
    assert why.startswith(f"production model not read from InferenceService {NS}/{NAME}")
    assert "Kubernetes configuration" in why
