"""The real images, built with Docker on this machine and run as production runs them.

- The serving image (``Dockerfile.serve``) runs with the transformer container's settings from
  the shipped InferenceService (``snapcat/data/kserve/inferenceservice.yaml``: its args,
  read-only root, dropped capabilities, CPU and memory limits, the /tmp scratch volume) plus the
  arguments KServe's controller appends,
  and classifies photos (V1 and V2) against the local TF-Serving-compatible predictor serving a
  small exported model; its answers must agree with that SavedModel run in this process.
- The training and light images (``Dockerfile.train``, ``Dockerfile.pipeline``) run the whole
  pipeline through ``kfp.local.DockerRunner`` (``snapcat pipeline run-local --runner docker``).

Marked ``image``: not part of ``make test``; ``make image-test`` (and CI after ``make test``) runs
them, installing and starting Docker first. The images are built by ``scripts/build-image.sh``
(Docker's layer cache makes a second build of unchanged sources take seconds).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from _training_fixtures import spread_head_scores
from conftest import REPO_ROOT, SAMPLE_DIR, make_image_bytes, v2_categories

from components.images import default_light_image, default_train_image
from snapcat.contract.prediction_signing import KeyRing, write_key_folder
from snapcat.local.processes import free_port, stop_process, wait_http_ok
from snapcat.rollout.isvc import cpu_cores
from snapcat.rollout.render import serve_image, shipped_inferenceservice

BUILD_TIMEOUT = 1800
SERVE_IMAGE = serve_image()  # the name and tag the InferenceService deploys
MODEL_NAME = "listing-category"
IMAGE_SIZE = 71
#: scores come back rounded to 4 decimals; batching may move float32 results a little
TOLERANCE = 2e-3
#: far above what the image needs (~0.5 GB), far below what TensorFlow would add
SERVE_IMAGE_MAX_BYTES = 700_000_000
#: builds inside a test's time when `make image-test` has not built the images before
pytestmark = [pytest.mark.image, pytest.mark.timeout(2 * BUILD_TIMEOUT)]


# ------------------------------------------------------------------------------------- helpers
def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed:\n{result.stderr[-3000:]}")
    return result


def build_image(kind: str) -> None:
    """scripts/build-image.sh: starts Docker if needed, builds on the local Python stand-in."""
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-image.sh"), kind],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)


def report(capsys, line: str) -> None:
    """Figures for the person running `make image-test` (pytest captures print otherwise)."""
    with capsys.disabled():
        print(f"\n  {line}", flush=True)


def sample_photos(n: int) -> list[Path]:
    """Photos from different categories of the bundled sample."""
    folders = sorted(p for p in SAMPLE_DIR.iterdir() if p.is_dir())
    return [sorted(folder.glob("*.jpg"))[0] for folder in folders[:n]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------ the transformer container as deployed
def transformer_spec() -> tuple[dict, list[dict]]:
    """The transformer's container and its volumes, as the shipped InferenceService declares
    them (``snapcat/data/kserve/inferenceservice.yaml``, what ``manifests/base`` deploys)."""
    transformer = shipped_inferenceservice()["spec"]["transformer"]
    return transformer["containers"][0], transformer.get("volumes", [])


def kserve_args(container: dict, predictor_host: str, port: int) -> list[str]:
    """The container's args from the manifest, then what KServe's controller appends to a
    custom transformer's args unless they are there already (``--model_name``,
    ``--predictor_host``, ``--http_port``). The one change: the port, since with the host's
    network the container's 8080 would be this machine's 8080."""
    args = [
        f"--http_port={port}" if a.startswith("--http_port") else a
        for a in container.get("args", [])
    ]
    controller = {
        "--model_name": MODEL_NAME,
        "--predictor_host": predictor_host,
        "--http_port": str(port),
    }
    for flag, value in controller.items():
        if not any(a == flag or a.startswith(flag + "=") for a in args):
            args += [flag, value]
    return args


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(quantity)).groups()
    return int(float(number) * units.get(unit, 1))


def docker_run_flags(
    container: dict, volumes: list[dict], secrets: dict[str, Path] | None = None
) -> list[str]:
    """`docker run` flags for what the pod spec sets: environment, scratch volumes, Secret
    volumes (``secrets``: a folder per secretName, mounted read-only with the volume's
    ``defaultMode``, as kubelet projects it), the security context, the resource limits. No model
    folder: the transformer has none (labels come with the predictor's answers). The image's own
    user is kept: it must be the non-root one the manifest names (checked separately)."""
    flags = ["--network=host"]
    for variable in container.get("env", []):
        flags += ["-e", f"{variable['name']}={variable['value']}"]
    by_name = {v["name"]: v for v in volumes}
    for mount in container.get("volumeMounts", []):
        volume = by_name[mount["name"]]
        if "secret" in volume:
            folder = (secrets or {})[volume["secret"]["secretName"]]
            mode = volume["secret"].get("defaultMode", 0o644)
            folder.chmod(0o755)
            for file in folder.iterdir():
                file.chmod(mode)
            flags += ["-v", f"{folder}:{mount['mountPath']}:ro"]
            continue
        size = volume["emptyDir"].get("sizeLimit")
        flags += ["--tmpfs", mount["mountPath"] + (f":size={_bytes(size)}" if size else "")]
    security = container.get("securityContext", {})
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", capability]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        flags += ["--cpus", str(cpu_cores(limits["cpu"]))]
    if "memory" in limits:
        flags += ["--memory", str(_bytes(limits["memory"]))]
    return flags


# -------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def serving_image() -> str:
    build_image("serve")
    return SERVE_IMAGE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small exported model (EfficientNet-Lite0, no pretrained weights, 5 classes, 71 px)."""
    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.train.export import export_model
    from snapcat.train.modeling import ModelSpec, build_model

    classes = list(Taxonomy.load().trainable_slugs[:5])
    model, _ = build_model(
        ModelSpec(
            backbone="efficientnet-lite0",
            num_classes=len(classes),
            image_size=IMAGE_SIZE,
            weights="none",
        )
    )
    spread_head_scores(model, [p.read_bytes() for p in sample_photos(8)], IMAGE_SIZE)
    root = tmp_path_factory.mktemp("model") / MODEL_NAME
    export_model(
        model,
        str(root),
        classes=classes,
        image_size=IMAGE_SIZE,
        jpeg_quality=90,
        backbone="efficientnet-lite0",
    )
    return root


@pytest.fixture(scope="module")
def reference(model_dir):
    """The exported SavedModel in this process: what the container's answers must agree with."""
    from snapcat.imaging.normalize import normalize_image
    from snapcat.train.export import ServingModel

    model = ServingModel(str(model_dir))

    def probabilities(photo: bytes) -> dict[str, float]:
        scores = model.predict([normalize_image(photo, model.info.spec)])[0]
        return dict(zip(model.info.classes, scores.tolist(), strict=True))

    probabilities.info = model.info
    return probabilities


def _wait_ok(url: str, timeout: float, describe, **watch) -> None:
    """``wait_http_ok``, failing with the server's log."""
    try:
        wait_http_ok(url, timeout, interval=0.5, **watch)
    except (RuntimeError, TimeoutError) as exc:
        raise AssertionError(f"{exc}\n{describe()}") from exc


@pytest.fixture(scope="module")
def predictor(model_dir, tmp_path_factory):
    """The local TF-Serving stand-in, through its CLI, on 127.0.0.1."""
    port = free_port()
    log = tmp_path_factory.mktemp("predictor") / "predictor.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snapcat.cli",
                "serve",
                "predictor",
                "--model-dir",
                str(model_dir),
                "--model-name",
                MODEL_NAME,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    try:
        _wait_ok(
            f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}",
            240,
            lambda: log.read_text(errors="replace")[-3000:],
            processes=[process],
        )
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process)


class Container:
    """The transformer container, started as the InferenceService would start it."""

    def __init__(self, image: str, predictor_host: str, secrets: dict[str, Path]):
        spec, volumes = transformer_spec()
        self.port = free_port()
        self.name = f"snapcat-image-test-{uuid.uuid4().hex[:8]}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = kserve_args(spec, predictor_host, self.port)
        self.ready_path = spec["readinessProbe"]["httpGet"]["path"]
        flags = docker_run_flags(spec, volumes, secrets)
        docker("run", "-d", "--name", self.name, *flags, image, *self.args)

    def running(self) -> bool:
        state = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout
        return state.strip() == "true"

    def logs(self) -> str:
        result = docker("logs", "--tail", "60", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False, timeout=60)


@pytest.fixture(scope="module")
def transformer(serving_image, predictor, tmp_path_factory):
    keys = write_key_folder(tmp_path_factory.mktemp("prediction-keys"))
    container = Container(serving_image, predictor, {"snapcat-prediction-keys": keys})
    container.keys = keys
    try:
        _wait_ok(container.url + container.ready_path, 120, container.logs, alive=container.running)
        yield container
    finally:
        container.remove()


# ----------------------------------------------------------------------------- serving image
def test_serving_image_is_non_root_without_tensorflow(serving_image, capsys):
    user = docker("image", "inspect", "-f", "{{.Config.User}}", serving_image).stdout.strip()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user!r}: Kubernetes' runAsNonRoot needs a uid"
    spec, _ = transformer_spec()
    assert int(uid) == spec["securityContext"]["runAsUser"]
    probe = (
        "import importlib.util as u, os, json; "
        "print(json.dumps([os.getuid(), [m for m in ('tensorflow', 'keras', 'torch', 'jax') "
        "if u.find_spec(m)]]))"
    )
    ran = docker(
        "run", "--rm", "--network=host", "--entrypoint", "python", serving_image, "-c", probe
    )
    assert json.loads(ran.stdout) == [int(uid), []]
    size = image_size(serving_image)
    report(capsys, f"{serving_image}: {size / 1e6:.0f} MB")
    assert size < SERVE_IMAGE_MAX_BYTES


def test_serving_image_refuses_bad_arguments_clearly(serving_image):
    """A typo in the InferenceService's args stops the container at once with argparse's
    message, instead of a pod that starts and serves something else."""
    ran = docker(
        "run", "--rm", "--network=host", serving_image, "--top_kk=3", check=False, timeout=60
    )
    assert ran.returncode == 2 and "--top_kk" in ran.stderr


def assert_agrees(categories: list[dict], scores: dict[str, float]) -> None:
    """Top-3 from the container == top-3 of the in-process SavedModel, with the taxonomy's
    labels."""
    from snapcat.contract.taxonomy import Taxonomy

    taxonomy = Taxonomy.load()
    assert len(categories) == 3
    got = [c["score"] for c in categories]
    assert got == sorted(got, reverse=True)
    for category in categories:
        assert category["label"] == taxonomy[category["slug"]].label
        assert abs(category["score"] - scores[category["slug"]]) < TOLERANCE, (categories, scores)
    chosen = {c["slug"] for c in categories}
    assert all(p <= min(got) + TOLERANCE for s, p in scores.items() if s not in chosen)


def test_classifies_photos_v1(transformer, reference):
    photos = [p.read_bytes() for p in sample_photos(3)]
    photos.append(make_image_bytes("HEIF", (640, 480), seed=7))  # the image's libheif works
    response = httpx.post(
        f"{transformer.url}/v1/models/{MODEL_NAME}:predict",
        json={"instances": [{"image_bytes": {"b64": b64(p)}} for p in photos]},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == str(reference.info.version)
    assert len(body["predictions"]) == len(photos)
    tops = []
    keys = KeyRing.load(transformer.keys)  # the Secret the container mounts, as the sink reads it
    for prediction, photo in zip(body["predictions"], photos, strict=True):
        assert_agrees(prediction["categories"], reference(photo))
        tops.append(prediction["categories"][0]["slug"])
        slugs = [c["slug"] for c in prediction["categories"]]
        assert keys.verify(
            prediction["prediction_id"], body["model_version"], slugs, prediction["confident"]
        ), prediction
    assert len(set(tops)) > 1, "every photo got the same answer: the fixture model is degenerate"


def test_classifies_photos_v2(transformer, reference):
    photos = [p.read_bytes() for p in sample_photos(2)]
    request = {
        "id": "image-test",
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [len(photos)],
                "data": [b64(p) for p in photos],
            }
        ],
    }
    response = httpx.post(
        f"{transformer.url}/v2/models/{MODEL_NAME}/infer", json=request, timeout=120
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["id"]) == (MODEL_NAME, "image-test")
    for i, photo in enumerate(photos):
        categories = v2_categories(body, i)
        assert_agrees(categories, reference(photo))


def test_a_bad_photo_is_a_400_and_the_container_keeps_serving(transformer, reference):
    url = f"{transformer.url}/v1/models/{MODEL_NAME}:predict"
    bad = httpx.post(url, json={"instances": [{"image_bytes": {"b64": b64(b"no photo")}}]})
    assert bad.status_code == 400, bad.text
    photo = sample_photos(1)[0].read_bytes()
    good = httpx.post(url, json={"instances": [{"image_bytes": {"b64": b64(photo)}}]}, timeout=60)
    assert good.status_code == 200, good.text
    assert_agrees(good.json()["predictions"][0]["categories"], reference(photo))


def test_the_container_stops_cleanly_on_sigterm(transformer):
    """Kubernetes stops a pod with SIGTERM and kills it after the grace period."""
    docker("stop", "--time", "20", transformer.name, timeout=60)
    code = docker("inspect", "-f", "{{.State.ExitCode}}", transformer.name).stdout.strip()
    # 0: it exited by itself on SIGTERM; a container killed after the grace period exits 137.
    assert code == "0", (code, transformer.logs())


# ------------------------------------------------------------ training image and DockerRunner
@pytest.fixture(scope="module")
def pipeline_images() -> tuple[str, str]:
    build_image("train")
    build_image("pipeline")
    return default_train_image(), default_light_image()


def test_training_image_has_the_lock_tensorflow_and_the_weights_it_could_bake(
    pipeline_images, capsys
):
    train_image, light_image = pipeline_images
    lock = (REPO_ROOT / "requirements" / "train.lock").read_text()
    tensorflow = re.search(r"^tensorflow-cpu==(\S+)$", lock, re.M).group(1)
    probe = (
        "import json, os, tensorflow as tf; from snapcat.train import efficientnet_lite as e; "
        "print(json.dumps([os.getuid(), tf.__version__, e.converted_weights_path().is_file(), "
        "os.access(e.converted_weights_path(), os.W_OK)]))"
    )
    ran = docker(
        "run", "--rm", "--network=host", "--entrypoint", "python", train_image, "-c", probe,
        timeout=180,
    )  # fmt: skip
    uid, version, baked, writable = json.loads(ran.stdout.strip().splitlines()[-1])
    assert uid != 0 and version == tensorflow
    assert baked and not writable, "EfficientNet-Lite0's weights are baked, read-only"
    light = docker(
        "run", "--rm", "--network=host", "--entrypoint", "python", light_image, "-c",
        "import importlib.util as u; print(bool(u.find_spec('tensorflow')), bool(u.find_spec('kfp')))",
    )  # fmt: skip
    assert light.stdout.split() == ["False", "True"]
    report(
        capsys,
        f"{train_image}: {image_size(train_image) / 1e6:.0f} MB; "
        f"{light_image}: {image_size(light_image) / 1e6:.0f} MB",
    )


def test_pipeline_runs_each_step_in_its_image(pipeline_images, tmp_path):
    """``snapcat pipeline run-local --runner docker``: the whole pipeline through
    kfp.local.DockerRunner, each step in the image its component names; the review's CSV,
    outside the input folder, is mounted for the steps that read it."""
    train_image, light_image = pipeline_images
    exclude = tmp_path / "exclude.csv"
    exclude.write_text("path\nplants/plants_001.jpg\n")
    params = [
        f"exclude={exclude}",
        "image_size=71",
        "epochs=1",
        "weights=none",
        "candidates=efficientnet-lite0:feature-extraction",
        "min_top1=0",
        "min_top3=0",
    ]
    command = [sys.executable, "-m", "snapcat.cli", "pipeline", "run-local", "--runner", "docker"]
    command += ["--input", str(SAMPLE_DIR), "--workdir", str(tmp_path)]
    command += [a for p in params for a in ("--param", p)]
    ran = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-5000:]
    # DockerRunner names the image it started each step in
    found = re.findall(r"Found image '([^']+)'", output)
    assert sorted(set(found)) == sorted({train_image, light_image}), found
    assert found.count(train_image) == 3  # prepare, train, evaluate
    assert found.count(light_image) == 3  # fingerprint, select, deploy
    assert "local pipeline run finished" in output

    from pipelines.runner import locate_artifacts
    from snapcat.contract.model_info import load_model_info

    (run_dir,) = (tmp_path / "pipeline_root").iterdir()
    artifacts = locate_artifacts(run_dir)
    info = load_model_info(artifacts["model"])
    assert (info.backbone, info.image_size) == ("efficientnet-lite0", 71)
    stats = json.loads(Path(artifacts["dataset"], "stats.json").read_text())
    assert stats["corrections"]["excluded"] == 1
    metrics = json.loads(Path(artifacts["metrics"]).read_text())
    assert 0 <= metrics["top1"] <= metrics["top3"] <= 1
    manifest = Path(artifacts["deploy manifest"]).read_text()
    assert artifacts["model"] in manifest
    # the steps wrote as the calling user, and no container is left behind
    assert {p.stat().st_uid for p in run_dir.rglob("*")} == {os.getuid()}
    left = docker("ps", "-a", "-q", "--filter", f"ancestor={train_image}").stdout.split()
    left += docker("ps", "-a", "-q", "--filter", f"ancestor={light_image}").stdout.split()
    assert not left


def test_run_local_docker_names_a_missing_image(pipeline_images, tmp_path):
    missing = f"snapcat-local/no-such-image:{uuid.uuid4().hex[:8]}"
    ran = subprocess.run(
        [
            sys.executable, "-m", "snapcat.cli", "pipeline", "run-local", "--runner", "docker",
            "--input", str(SAMPLE_DIR), "--workdir", str(tmp_path), "--image", missing,
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ran.returncode != 0
    assert f"image {missing} is not on this machine and cannot be pulled" in ran.stderr
    assert "scripts/build-image.sh" in ran.stderr
