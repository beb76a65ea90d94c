"""The training pipeline: compiled spec structure, parameters, submission contract, local run."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _fake_kfp
import pytest
import yaml

from components.images import default_light_image, default_train_image
from pipelines import runner
from pipelines.training_pipeline import ClusterSettings, Toleration
from snapcat.cli import main as cli_main

fake_kfp = _fake_kfp.fake_kfp  # the fixture, for this module's tests
REPO = Path(__file__).resolve().parents[2]
STEPS = ("fingerprint", "prepare", "train", "evaluate", "select", "deploy")


def _compile(tmp_path: Path, settings: ClusterSettings | None = None) -> tuple[dict, dict]:
    path = runner.compile_pipeline(tmp_path / "p.yaml", settings)
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    return _compile(tmp_path_factory.mktemp("compiled"))


def _tasks(spec: dict) -> dict:
    """Every task of the pipeline by name, wherever it is nested (loop, condition)."""
    found = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        found.update(component.get("dag", {}).get("tasks", {}))
    return found


def test_dag_trains_every_candidate_then_deploys_the_best_only_if_blessed(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"fingerprint", "prepare", "for-loop-1", "select", "condition-2"}
    assert tasks["prepare"]["dependentTasks"] == ["fingerprint"]
    loop = tasks["for-loop-1"]
    assert loop["dependentTasks"] == ["prepare"]
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--candidates"}
    inner_loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert set(inner_loop) == {"train", "evaluate"}
    assert inner_loop["evaluate"]["dependentTasks"] == ["train"]
    assert inner_loop["train"]["inputs"]["parameters"]["candidate"] == {
        "componentInputParameter": "pipelinechannel--candidates-loop-item"
    }
    # select sees every candidate's model and evaluation (dsl.Collected)
    collected = tasks["select"]["inputs"]["artifacts"]
    assert collected["models"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
    assert collected["evaluations"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
    condition = tasks["condition-2"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--select-Output'] == true"
    )
    inner = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert list(inner) == ["deploy"]
    # the deployed model is the selected one; its URI becomes KServe's storageUri
    model_in = inner["deploy"]["inputs"]["artifacts"]["model"]
    assert model_in == {"componentInputArtifact": "pipelinechannel--select-best_model"}


def test_gpu_resources_retry_and_caching(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    for step in ("train", "evaluate"):
        resources = executors[f"exec-{step}"]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["resourceCpuRequest"] and resources["resourceMemoryLimit"]
    assert "accelerator" not in executors["exec-prepare"]["container"].get("resources", {})
    tasks = _tasks(spec)
    retry = tasks["train"]["retryPolicy"]
    assert retry["maxRetryCount"] == 3 and retry["backoffDuration"] == "60s"
    assert tasks["prepare"]["cachingOptions"] == {"enableCache": True}
    assert tasks["fingerprint"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["train"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["evaluate"]["cachingOptions"].get("enableCache", False) is False


def test_node_selector_tolerations_and_secret_env(compiled):
    _, k8s = compiled
    for step in ("train", "evaluate"):
        config = k8s[f"exec-{step}"]
        assert config["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert config["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
        ]
    for step in STEPS:
        secret = k8s[f"exec-{step}"]["secretAsEnv"][0]
        assert secret["secretName"] == "snapcat-storage"
        assert {e["envVar"] for e in secret["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
    assert "nodeSelector" not in k8s["exec-prepare"]


def test_tensorflow_steps_run_in_the_training_image_the_others_in_the_light_one(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert {f"exec-{s}" for s in STEPS} == set(executors)
    # list storage, copy a folder, call the Kubernetes API: no TensorFlow
    light = {"exec-fingerprint", "exec-select", "exec-deploy"}
    for name, executor in executors.items():
        container = executor["container"]
        wanted = default_light_image() if name in light else default_train_image()
        assert container["image"] == wanted
        # kfp is in the image: the command must not pip-install anything at run time
        assert "pip install" not in " ".join(container["command"])


def test_every_step_has_a_timeout(compiled):
    _, k8s = compiled
    settings = ClusterSettings()
    assert settings.deploy_timeout > settings.rollout_ready_timeout + settings.analysis_timeout
    for step in STEPS:
        deadline = k8s[f"exec-{step}"]["activeDeadlineSeconds"]
        assert int(deadline) == getattr(settings, f"{step}_timeout") > 0


def test_prepare_is_cached_on_the_data_fingerprint(compiled):
    spec, _ = compiled
    prepare_in = spec["root"]["dag"]["tasks"]["prepare"]["inputs"]["parameters"]
    assert prepare_in["data_version"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "fingerprint"}
    }
    fingerprint_in = spec["root"]["dag"]["tasks"]["fingerprint"]["inputs"]["parameters"]
    assert fingerprint_in["data_version"] == {"componentInputParameter": "data_version"}
    assert fingerprint_in["input_uri"] == {"componentInputParameter": "input_uri"}


def test_training_checkpoints_go_to_the_run_workspace(compiled):
    spec, platform = compiled
    train_in = _tasks(spec)["train"]["inputs"]["parameters"]
    assert train_in["workspace"] == {"runtimeValue": {"constant": "{{$.workspace_path}}"}}
    assert _tasks(spec)["train"]["retryPolicy"]["maxRetryCount"] >= 1


def test_the_run_has_a_workspace_volume(tmp_path):
    path = runner.compile_pipeline(
        tmp_path / "p.yaml", ClusterSettings(workspace_size="50Gi", workspace_storage_class="fast")
    )
    _, platform = yaml.safe_load_all(path.read_text())
    workspace = platform["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]
    assert workspace["size"] == "50Gi"
    assert workspace["kubernetes"]["pvcSpecPatch"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "fast",
    }


# ------------------------------------------------------- what a real KFP backend refuses (issue 23)
def test_the_committed_spec_passes_the_kfp_argo_compilers_workspace_rules():
    """KFP's Argo compiler (2.15, 2.17, HEAD: argocompiler/argo.go GetWorkspacePVC) refuses a
    workspace PVC without accessModes when the API server sets no default, as KFP's shipped
    manifests do not. The committed spec had ``pvcSpecPatch: {}``; it now carries them."""
    from pipelines import kfp_backend

    committed = REPO / "pipelines" / "training_pipeline.yaml"
    assert kfp_backend.problems(committed) == []
    workspace = kfp_backend.workspace_pvc(kfp_backend.load(committed))
    assert workspace["kubernetes"]["pvcSpecPatch"]["accessModes"] == ["ReadWriteMany"]
    # KFP 2.15-2.16 also require a storage class: said, and satisfied by naming one
    assert (
        "requires a workspace storageClassName"
        in kfp_backend.problems(committed, kfp_version=(2, 15))[0]
    )


# The compiler's own test table (argocompiler/argo_workspace_test.go), for a backend with no
# default workspace spec: (workspace section, refused because ...).
KFP_WORKSPACE_CASES = [
    ({"size": "5Gi", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"]}}}, None),
    ({"size": "5Gi", "kubernetes": {"pvcSpecPatch": {}}}, "must specify accessModes"),
    ({"size": "5Gi", "kubernetes": {}}, "must specify accessModes"),
    ({"size": "", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"]}}},
     "size is required"),
    ({"size": "10GB", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"]}}},
     "not a Kubernetes quantity"),
    ({"size": "1.5Gi", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteMany"]}}}, None),
    ({"size": "-10Gi", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"]}}},
     "negative"),
    ({"size": "10Gi", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"],
                                                      "invalidField": "x"}}},
     "unknown fields in PVC spec patch"),
    ({"size": "10Gi", "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"],
                                                      "storageClassName": ""}}},
     "must be omitted or a non-empty name"),
    ({"size": "10Gi", "kubernetes": {"pvcSpecPatch": {"accessModes": ["Sometimes"]}}},
     "each must be one of"),
    ({"size": "10Gi"}, "no kubernetes section"),
]  # fmt: skip


@pytest.mark.parametrize(("workspace", "refused"), KFP_WORKSPACE_CASES)
def test_workspace_rules_follow_the_kfp_compiler(workspace, refused):
    from pipelines import kfp_backend

    platform = {"platforms": {"kubernetes": {"pipelineConfig": {"workspace": workspace}}}}
    found = kfp_backend.workspace_problems(platform)
    if refused is None:
        assert found == []
    else:
        assert len(found) == 1 and refused in found[0], found


def test_without_rwx_the_candidates_train_one_at_a_time(tmp_path):
    """Parallel candidates on different GPU nodes cannot share a ReadWriteOnce volume
    (multi-attach errors): with RWO the loop runs one iteration at a time."""
    from pipelines import kfp_backend

    rwx_spec, _ = _compile(tmp_path / "rwx")
    loop = next(t for t in rwx_spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop.get("iteratorPolicy", {}).get("parallelismLimit", 0) == 0
    path = runner.compile_pipeline(
        tmp_path / "rwo.yaml", ClusterSettings(workspace_access_mode="ReadWriteOnce")
    )
    spec, platform = yaml.safe_load_all(path.read_text())
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"] == {"parallelismLimit": 1}
    assert kfp_backend.problems(path) == []
    # the same RWO workspace with a parallel loop is what the check refuses
    del loop["iteratorPolicy"]
    assert "in parallel" in kfp_backend.parallel_workspace_problems(spec, platform)[0]
    with pytest.raises(ValueError, match="workspace access mode"):
        ClusterSettings(workspace_access_mode="ReadOnlyMany")


def test_the_deploy_deadline_covers_everything_it_waits_for(tmp_path):
    """Issue 23, finding 6: deploy's deadline (1800 s) was shorter than its 600 s readiness wait
    plus the default 3600 s analysis: the pod died mid-analysis, the canary stayed at 10 %."""
    from pipelines.training_pipeline import DEPLOY_MARGIN, deploy_deadline

    for settings in (ClusterSettings(), ClusterSettings(analysis_timeout=7200,
                                                        rollout_ready_timeout=900)):  # fmt: skip
        _, k8s = _compile(tmp_path / str(settings.analysis_timeout), settings)
        deadline = int(k8s["exec-deploy"]["activeDeadlineSeconds"])
        waits = 2 * settings.rollout_ready_timeout + settings.analysis_timeout
        assert deadline == deploy_deadline(settings)
        assert deadline >= waits + settings.analysis_interval + DEPLOY_MARGIN
        # the run parameter's default is the analysis the deadline was derived from
        params = runner.pipeline_parameters(settings)
        assert params["analysis_timeout"].default == settings.analysis_timeout


def test_the_deploy_step_refuses_a_longer_analysis_than_its_deadline_allows(tmp_path):
    from components.deploy.component import deploy
    from snapcat.rollout import RolloutError

    class Model:
        path = uri = str(tmp_path)

    with pytest.raises(RolloutError, match="longer than the 3600 s this pipeline was compiled"):
        deploy(
            model=Model(), isvc_name="m", isvc_namespace="ns", canary_percent=10, dry_run=False,
            manifest=Model(), canary_auto=True, prometheus_url="http://127.0.0.1:9",
            analysis_timeout=7200.0, max_analysis_timeout=3600.0,
        )  # fmt: skip


# ------------------------------------------------------------------ submit: errors, --dry-run
def test_submit_without_a_host_is_one_line_not_localhost(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    argv = ["pipeline", "submit", "--param", "input_uri=gs://b/p"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "no Kubeflow Pipelines host: pass --host URL" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_submit_to_an_unreachable_host_is_one_line(capsys):
    argv = ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--param", "input_uri=gs://b/p"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("snapcat pipeline: error: cannot reach Kubeflow Pipelines at "
                          "http://127.0.0.1:9")  # fmt: skip
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["epochs=3"], "missing --param input_uri=..."),
        (["input_uri=data/sample"], "--param input_uri=data/sample: a path on this machine"),
        (["input_uri=gs://b/p", "exclude=review.csv"], "--param exclude=review.csv: a path"),
    ],
)
def test_submit_refuses_what_a_cluster_cannot_run_in_one_line(params, message, capsys):
    """Before the host is contacted (a closed port here): a run without its input, or naming
    files of this machine that no pod can read."""
    argv = ["pipeline", "submit", "--host", "http://127.0.0.1:9"]
    assert cli_main(argv + [a for p in params for a in ("--param", p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snapcat pipeline: error: ") and message in err, err
    assert err.count("\n") == 1


def test_submit_dry_run_compiles_checks_and_prints_what_would_be_sent(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    argv = ["pipeline", "submit", "--dry-run", "--host", "http://127.0.0.1:9", "--param",
            "input_uri=gs://b/p", "--param", "epochs=3", "--run-name", "nightly"]  # fmt: skip
    assert cli_main(argv) == 0  # nothing listens on :9, and nothing was asked
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["dry_run"] is True and shown["host"] == "http://127.0.0.1:9"
    assert shown["run_name"] == "nightly"
    assert shown["parameters"]["input_uri"] == "gs://b/p" and shown["parameters"]["epochs"] == 3
    assert shown["parameters"]["analysis_timeout"] == 3600
    assert shown["workspace"]["kubernetes"]["pvcSpecPatch"]["accessModes"] == ["ReadWriteMany"]
    assert shown["deadlines_seconds"]["deploy"] >= 600 + 3600
    # a package a KFP backend would refuse is refused here, before anything is sent
    stale = tmp_path / "old.yaml"
    text = (REPO / "pipelines" / "training_pipeline.yaml").read_text()
    stale.write_text(
        re.sub(r"pvcSpecPatch:\n\s+accessModes:\n\s+- ReadWriteMany", "pvcSpecPatch: {}", text)
    )
    assert "pvcSpecPatch: {}" in stale.read_text()
    assert cli_main([*argv, "--package", str(stale)]) == 2
    assert "would refuse this pipeline: workspace PVC spec must specify accessModes" in (
        capsys.readouterr().err
    )


def test_parameter_defaults_are_the_librarys():
    """The pipeline's defaults repeat PrepareConfig's, TrainConfig's and GateConfig's."""
    from snapcat.dataset.prepare import PrepareConfig
    from snapcat.evaluate.gate import GateConfig
    from snapcat.train.trainer import TrainConfig

    parameters = runner.pipeline_parameters()
    configs = (PrepareConfig(input="", output=""), TrainConfig(data="", output=""), GateConfig())
    compared = set()
    for config in configs:
        for name, parameter in parameters.items():
            if hasattr(config, name) and name not in compared:  # image_size, seed: prepare's
                expected = getattr(config, name)
                # a KFP parameter cannot be null: 0 stands for the library's None (head_epochs)
                got = (parameter.default or None) if expected is None else parameter.default
                assert got == expected, name
                compared.add(name)
    assert {
        "image_size",
        "seed",
        "test_fraction",
        "validation_fraction",
        "min_images_per_class",
        "relabel",
        "exclude",
        "ignore_unknown",
        "weights",
        "epochs",
        "head_epochs",
        "batch_size",
        "learning_rate",
        "fine_tune_learning_rate",
        "early_stopping_patience",
        "max_top1_drop",
        "max_top3_drop",
        "max_class_recall_drop",
        "min_class_support",
        "min_top1",
        "min_top3",
    } <= compared
    # the default candidate is TrainConfig's backbone and mode
    train = configs[1]
    assert parameters["candidates"].default == [f"{train.backbone}:{train.mode}"]


def test_compile_time_overrides(tmp_path):
    settings = ClusterSettings(
        image="registry.example/snapcat-train:test",
        gpu_type="nvidia.com/mig-1g.10gb",
        gpu_count=2,
        node_selector=(("pool", "a100"),),
        tolerations=(Toleration.parse("dedicated=ml:NoExecute"),),
        storage_secret="",
    )
    spec, k8s = _compile(tmp_path, settings)
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == "registry.example/snapcat-train:test"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
    assert train["resources"]["accelerator"]["resourceCount"] == "2"
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {"pool": "a100"}
    assert k8s["exec-train"]["tolerations"] == [
        {"effect": "NoExecute", "key": "dedicated", "operator": "Equal", "value": "ml"}
    ]
    assert "secretAsEnv" not in k8s.get("exec-prepare", {})


def test_committed_spec_is_up_to_date(tmp_path):
    fresh = list(yaml.safe_load_all(runner.compile_pipeline(tmp_path / "p.yaml").read_text()))
    committed = list(
        yaml.safe_load_all((REPO / "pipelines" / "training_pipeline.yaml").read_text())
    )
    assert fresh == committed, (
        "pipelines/training_pipeline.yaml is stale: run "
        "`snapcat pipeline compile --output pipelines/training_pipeline.yaml`"
    )


def test_pipeline_parameters_cover_the_run_time_choices():
    names = set(runner.pipeline_parameters())
    assert {
        "input_uri",
        "candidates",
        "weights",
        "image_size",
        "epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "max_top1_drop",
        "max_top3_drop",
        "max_class_recall_drop",
        "baseline_metrics_uri",
        "baseline_model_uri",
        "baseline_from_isvc",
        "data_version",
        "isvc_name",
        "isvc_namespace",
        "canary_percent",
        "confident_precision",
        "max_ece_increase",
    } <= names


def test_candidates_parameter_takes_a_list_and_checks_each_candidate():
    want = ["xception:two-phase", "efficientnet-lite0:feature-extraction"]
    assert runner.parse_params(["candidates=" + ",".join(want)]) == {"candidates": want}
    assert runner.parse_params(["candidates=" + json.dumps(want)]) == {"candidates": want}
    for bad, message in (
        ("resnet:two-phase", "unknown backbone"),
        ("xception:frozen", "unknown mode"),
        ("xception", "BACKBONE:MODE"),
        ("xception:two-phase,xception:two-phase", "listed twice"),
        ("", "at least one"),
    ):
        with pytest.raises(runner.PipelineParameterError, match=message):
            runner.parse_params([f"candidates={bad}"])


def test_param_parsing_is_typed_and_strict():
    assert runner.parse_params(
        ["epochs=3", "learning-rate=0.01", "deploy_dry_run=true", "weights=none"]
    ) == {"epochs": 3, "learning_rate": 0.01, "deploy_dry_run": True, "weights": "none"}
    with pytest.raises(runner.PipelineParameterError, match="no such parameter"):
        runner.parse_params(["epoch=3"])
    with pytest.raises(runner.PipelineParameterError, match="not a valid int"):
        runner.parse_params(["epochs=three"])
    with pytest.raises(runner.PipelineParameterError, match="NAME=VALUE"):
        runner.parse_params(["epochs"])


def test_cli_compile_writes_spec_and_rejects_bad_params(tmp_path, capsys):
    out = tmp_path / "spec.yaml"
    assert (
        cli_main(
            [
                "pipeline",
                "compile",
                "--output",
                str(out),
                "--gpu-type",
                "amd.com/gpu",
                "--node-selector",
                "gpu=mi300",
            ]
        )
        == 0
    )
    spec, platform = yaml.safe_load_all(out.read_text())
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "amd.com/gpu"
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"][
        "nodeSelector"
    ]["labels"] == {"gpu": "mi300"}
    assert (
        cli_main(
            [
                "pipeline",
                "run-local",
                "--input",
                "x",
                "--workdir",
                str(tmp_path),
                "--param",
                "nope=1",
            ]
        )
        == 2
    )
    assert "no such parameter" in capsys.readouterr().err


def test_submit_creates_a_run_with_typed_parameters(fake_kfp, capsys):
    host, requests = fake_kfp
    assert (
        cli_main(
            [
                "pipeline",
                "submit",
                "--host",
                host,
                "--run-name",
                "nightly",
                "--param",
                "input_uri=gs://bucket/photos",
                "--param",
                "epochs=5",
            ]
        )
        == 0
    )
    assert "run run-1 submitted" in capsys.readouterr().out
    runs = [body for method, path, body in requests if path == "/apis/v2beta1/runs"]
    assert len(runs) == 1
    body = runs[0]
    assert body["display_name"] == "nightly"
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "snapcat-training"
    platform = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "exec-train" in platform["deploymentSpec"]["executors"]
    assert body["runtime_config"]["parameters"] == {"input_uri": "gs://bucket/photos", "epochs": 5}


def test_submit_no_cache_turns_caching_off(fake_kfp, capsys):
    host, requests = fake_kfp
    argv = ["pipeline", "submit", "--host", host, "--param", "input_uri=gs://bucket/photos"]
    assert cli_main([*argv, "--no-cache"]) == 0
    assert cli_main(argv) == 0
    capsys.readouterr()
    uncached, default = [b for m, p, b in requests if p == "/apis/v2beta1/runs"]
    tasks = _tasks(uncached["pipeline_spec"]["pipeline_spec"])
    assert all(t["cachingOptions"].get("enableCache", False) is False for t in tasks.values())
    tasks = default["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks["prepare"]["cachingOptions"] == {"enableCache": True}


def test_submit_schedule_creates_a_recurring_run_caching_only_by_fingerprint(fake_kfp, capsys):
    host, requests = fake_kfp
    assert (
        cli_main(
            [
                "pipeline",
                "submit",
                "--host",
                host,
                "--schedule",
                "0 0 3 * * 1",
                "--param",
                "input_uri=s3://bucket/photos",
            ]
        )
        == 0
    )
    assert "recurring run rec-1 submitted" in capsys.readouterr().out
    (body,) = [b for m, p, b in requests if p == "/apis/v2beta1/recurringruns"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["no_catchup"] is True
    tasks = body["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    # honest caching: prepare is reused only when the input's fingerprint is unchanged
    assert tasks["prepare"]["cachingOptions"] == {"enableCache": True}
    assert tasks["fingerprint"]["cachingOptions"].get("enableCache", False) is False


@pytest.mark.slow
def test_local_run_end_to_end(tmp_path, capsys, monkeypatch):
    """The very same pipeline through kfp.local on the bundled sample, at tiny settings, with a
    reviewed label audit named by a path relative to the caller's folder."""
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "exclude.csv").write_text("path\nplants/plants_001.jpg\n")
    monkeypatch.chdir(tmp_path)
    params = [
        "exclude=review/exclude.csv",
        "image_size=71",
        "epochs=1",
        "weights=none",
        "candidates=xception:feature-extraction,efficientnet-lite0:feature-extraction",
        "batch_size=32",
        "min_top1=0",
        "min_top3=0",
        "canary_percent=20",
    ]
    code = cli_main(
        [
            "pipeline",
            "run-local",
            "--input",
            str(REPO / "data" / "sample"),
            "--workdir",
            str(tmp_path),
        ]
        + [a for p in params for a in ("--param", p)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "local pipeline run finished" in out
    run_dirs = list((tmp_path / "pipeline_root").iterdir())
    assert len(run_dirs) == 1
    artifacts = runner.locate_artifacts(run_dirs[0])
    stats = json.loads(Path(artifacts["dataset"], "stats.json").read_text())
    assert stats["corrections"]["excluded"] == 1
    assert "plants/plants_001.jpg" in Path(artifacts["dataset"], "rejected.csv").read_text()

    import tensorflow as tf

    from snapcat.contract.model_info import latest_version_dir, load_model_info

    version_dir = latest_version_dir(artifacts["model"])
    loaded = tf.saved_model.load(version_dir)
    assert "serving_default" in loaded.signatures
    assert load_model_info(version_dir).image_size == 71
    metrics = json.loads(Path(artifacts["metrics"]).read_text())
    assert 0 <= metrics["top1"] <= metrics["top3"] <= 1 and metrics["blessed"] is True
    assert "<img" in Path(artifacts["report"]).read_text()
    # both candidates were trained and compared on the same test split; the best one went on
    comparison = Path(artifacts["comparison"]).read_text()
    ranked = [
        line.split("|")[1].strip() for line in comparison.splitlines() if line.startswith("| ")
    ][1:]
    assert sorted(ranked) == [
        "efficientnet-lite0:feature-extraction",
        "xception:feature-extraction",
    ]
    assert f"Best: **{ranked[0]}**" in comparison
    assert load_model_info(version_dir).backbone == ranked[0].split(":")[0]
    manifest = yaml.safe_load(Path(artifacts["deploy manifest"]).read_text())
    assert manifest, "the deploy step wrote the object it would send"
    assert artifacts["model"] in json.dumps(manifest)
    assert "20" in json.dumps(manifest)


@pytest.mark.slow
@pytest.mark.long
def test_a_killed_run_resumes_training_from_the_workspace(tmp_path):
    """Preemption, locally: kill the whole kfp.local run (as a node loss kills the pod) once the
    train step has finished an epoch, then run again with the same workspace. The second run
    continues from the checkpoints in the workspace instead of starting at epoch 0."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from _training_fixtures import history_rows

    params = ["image_size=71", "epochs=3", "weights=none", "candidates=xception:feature-extraction"]
    params += ["batch_size=16", "min_top1=0", "min_top3=0"]
    command = [sys.executable, "-m", "snapcat.cli", "pipeline", "run-local"]
    command += ["--input", str(REPO / "data" / "sample"), "--workdir", str(tmp_path)]
    command += [a for p in params for a in ("--param", p)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

    def checkpoints() -> list[dict]:
        found = sorted((tmp_path / "workspace").glob("snapcat-train/*/history.csv"))
        return history_rows(found[0]) if found else []

    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        first = subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 420
            while not checkpoints():
                assert first.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no epoch finished in time"
                time.sleep(0.05)
            os.killpg(first.pid, signal.SIGKILL)  # the task subprocesses too
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(timeout=30)
    before = checkpoints()
    assert 1 <= len(before) < 3, "the run finished before it could be killed"

    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    runs = sorted((tmp_path / "pipeline_root").iterdir(), key=lambda p: p.stat().st_mtime)
    artifacts = runner.locate_artifacts(runs[-1])
    after = history_rows(Path(artifacts["model"], "training", "history.csv"))
    assert [int(r["epoch"]) for r in after] == [0, 1, 2]  # none re-trained from scratch
    assert after[: len(before)] == before  # the killed run's epochs, as they were
    assert not (tmp_path / "workspace").exists(), "kfp.local drops a finished run's workspace"


def test_submit_to_something_that_is_not_kfp_is_one_line(capsys):
    class NotKfp(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotKfp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        argv = ["pipeline", "submit", "--host", host, "--param", "input_uri=gs://b/p"]
        assert cli_main(argv) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "answered HTTP 404" in err and "not a Kubeflow Pipelines API" in err
    assert err.count("\n") == 1


def test_defaults_are_written_once():
    """The CLI's cluster flags and the deploy component fall back to the one definition."""
    import inspect

    from components.deploy.component import deploy
    from pipelines.training_pipeline import ClusterSettings
    from snapcat.cli import build_parser
    from snapcat.commands.pipeline import settings_from_args
    from snapcat.rollout.analysis import DEFAULT_WINDOW

    args = build_parser().parse_args(["pipeline", "compile", "--output", "p.yaml"])
    assert settings_from_args(args) == ClusterSettings()
    args = build_parser().parse_args(
        ["pipeline", "compile", "--output", "p.yaml", "--gpu-type", "amd.com/gpu"]
    )
    assert settings_from_args(args).gpu_type == "amd.com/gpu"
    # KFP ships the component's source, so its default is a literal: it must stay the same
    assert inspect.signature(deploy).parameters["analysis_window"].default == DEFAULT_WINDOW
