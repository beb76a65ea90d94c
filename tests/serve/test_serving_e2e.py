"""End to end: the real local predictor (TF Serving's REST API over the exported SavedModel) and
the real KServe transformer (``python -m serving``), as separate processes on loopback ports.

Covers photo formats, batches, the V2 protocol, every kind of bad input (the server stays
healthy), a predictor that hangs or is killed and restarted (HTTP 503, then recovery), concurrent
clients, the CLI (``snapcat classify``, ``snapcat serve local``) and that the transformer process
never imports TensorFlow. The model is an untrained Xception at 71 px whose head is scaled so
different photos get different, non-uniform probabilities; answers are checked against the same
SavedModel run in-process on the shared normalization's output.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from _batch_fixtures import IMAGE_SIZE, export_tiny_model
from _feedback_fixtures import Sink, logger_event
from conftest import REPO_ROOT, SAMPLE_DIR, make_image_bytes, v2_categories

from snapcat.cli import main
from snapcat.contract.confidence import is_confident
from snapcat.contract.model_info import load_model_info
from snapcat.contract.prediction_signing import write_key_folder
from snapcat.contract.signature import DESCRIPTION_OUTPUTS, OUTPUT_NAME
from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset.prepare import PrepareConfig, run_prepare
from snapcat.feedback.events import PREDICTION_ID, REQUEST_TYPE, RESPONSE_TYPE
from snapcat.imaging.normalize import normalize_image
from snapcat.local.processes import free_port, spawn, stop_process, wait_http_ok
from snapcat.local.stack import predictor_command, transformer_command
from snapcat.serve.client import SnapcatClient

pytestmark = pytest.mark.slow

MODEL_NAME = "listing-category"
MAX_IMAGE_BYTES = 1_000_000
MAX_REQUEST_BYTES = 3_000_000
MAX_BATCH = 8
PREDICTOR_TIMEOUT = 3.0
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
#: Scores come back rounded to 4 decimals, and batch composition may move float32 results a bit.
TOLERANCE = 2e-3


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def v1(*photos: bytes) -> dict:
    return {"instances": [{"image_bytes": {"b64": b64(p)}} for p in photos]}


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def sample_photos(n: int) -> list[Path]:
    photos = sorted(SAMPLE_DIR.glob("*/*.jpg"))
    return photos[:: max(1, len(photos) // n)][:n]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model") / MODEL_NAME
    return export_tiny_model(root, confidence_threshold=0.9)


@pytest.fixture(scope="module")
def info(model_dir):
    return load_model_info(str(model_dir))


@pytest.fixture(scope="module")
def saved_labels(info, model_dir) -> dict[str, str]:
    """The labels from the taxonomy snapshot saved beside the model."""
    version_dir = model_dir / str(info.version)
    snapshot = Taxonomy.load(version_dir / "assets" / "snapcat" / "taxonomy.yaml")
    return {slug: snapshot[slug].label for slug in info.classes}


@pytest.fixture(scope="module")
def reference(model_dir, info):
    """The exported SavedModel in this process: what the servers' answers must agree with."""
    from snapcat.train.export import ServingModel

    model = ServingModel(str(model_dir))

    def probabilities(photo: bytes) -> np.ndarray:
        return model.predict([normalize_image(photo, info.spec)])[0]

    probabilities.model = model
    return probabilities


class Stack:
    """The predictor and the transformer processes, their ports and logs."""

    def __init__(self, model_dir: Path, logs: Path):
        self.model_dir = model_dir
        self.logs = logs
        self.predictor_port = free_port()
        self.port = free_port()
        self.predictor: subprocess.Popen | None = None
        self.transformer: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.predictor_url = f"http://127.0.0.1:{self.predictor_port}"
        self.predict_url = f"{self.url}/v1/models/{MODEL_NAME}:predict"
        self.ready_url = f"{self.url}/v1/models/{MODEL_NAME}"
        # The Secret the transformer signs prediction ids with (the feedback sink verifies them).
        self.prediction_keys = write_key_folder(logs / "prediction-keys")

    def start_predictor(self) -> None:
        self.predictor = spawn(
            predictor_command(
                model_dir=str(self.model_dir), port=self.predictor_port, model_name=MODEL_NAME
            ),
            self.logs / "predictor.log",
        )

    def start_transformer(self) -> None:
        command = transformer_command(
            predictor_host=f"127.0.0.1:{self.predictor_port}",
            port=self.port,
            model_name=MODEL_NAME,
            extra=[
                f"--max_image_bytes={MAX_IMAGE_BYTES}",
                f"--max_request_bytes={MAX_REQUEST_BYTES}",
                f"--max_batch={MAX_BATCH}",
                f"--predictor_timeout={PREDICTOR_TIMEOUT}",
                f"--header_timeout={HEADER_TIMEOUT}",
                f"--body_timeout={BODY_TIMEOUT}",
                # not from this machine's cgroup: test_concurrent_clients sends 8 at once
                "--max_photos_in_flight=16",
                "--enable_latency_logging=false",
            ],
        )
        command[1:1] = ["-X", "importtime"]  # every module the process imports, in its log
        self.transformer = spawn(
            command,
            self.logs / "transformer.log",
            {"SNAPCAT_PREDICTION_KEYS": str(self.prediction_keys)},
        )

    def wait_ready(self, timeout: float = 420) -> None:
        try:
            wait_http_ok(self.ready_url, timeout, [p for p in (self.predictor, self.transformer)])
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        out = []
        for name in ("predictor.log", "transformer.log"):
            path = self.logs / name
            if path.exists():
                text = [
                    line
                    for line in path.read_text(errors="replace").splitlines()
                    if not line.startswith("import time:")
                ]
                out.append(f"--- {name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        for process in (self.transformer, self.predictor):
            if process is not None:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGCONT)
                stop_process(process, grace=10)


@pytest.fixture(scope="module")
def stack(model_dir, tmp_path_factory):
    stack = Stack(model_dir, tmp_path_factory.mktemp("logs"))
    stack.start_predictor()
    stack.start_transformer()
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=60) as client:
        yield client


def assert_agrees(categories: list[dict], probabilities: np.ndarray, info, labels) -> None:
    """Top-3 from the server == top-3 of the in-process probabilities, labels from the model."""
    by_slug = dict(zip(info.classes, probabilities.tolist(), strict=True))
    assert len(categories) == 3
    scores = [c["score"] for c in categories]
    assert scores == sorted(scores, reverse=True)
    for c in categories:
        assert c["label"] == labels[c["slug"]]
        assert abs(c["score"] - by_slug[c["slug"]]) < TOLERANCE, (categories, by_slug)
    chosen = {c["slug"] for c in categories}
    assert all(p <= min(scores) + TOLERANCE for s, p in by_slug.items() if s not in chosen)


# ------------------------------------------------------------------------------------ predictor
def test_predictor_status_and_metadata_follow_tf_serving(stack, http, info):
    status = http.get(f"{stack.predictor_url}/v1/models/{MODEL_NAME}").json()
    assert status == {
        "model_version_status": [
            {
                "version": str(info.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    metadata = http.get(f"{stack.predictor_url}/v1/models/{MODEL_NAME}/metadata").json()
    assert metadata["model_spec"] == {
        "name": MODEL_NAME,
        "signature_name": "",
        "version": str(info.version),
    }
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    dims = signature["outputs"]["probabilities"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "5"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    missing = http.get(f"{stack.predictor_url}/v1/models/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]
    assert http.get(f"{stack.predictor_url}/v1/models/{MODEL_NAME}/versions/1").status_code == 404


def test_predictor_predicts_the_row_format(stack, http, info, reference):
    photos = [p.read_bytes() for p in sample_photos(3)]
    canonical = [normalize_image(p, info.spec) for p in photos]
    expected = reference.model.predict(canonical)
    url = f"{stack.predictor_url}/v1/models/{MODEL_NAME}:predict"
    row = http.post(
        url,
        json={
            "signature_name": "serving_default",
            "instances": [{"image_bytes": {"b64": b64(c)}} for c in canonical],
        },
    )
    assert row.status_code == 200, row.text
    # several outputs: TF Serving answers one object per row in the row format
    rows = row.json()["predictions"]
    assert [sorted(r) for r in rows] == [sorted([OUTPUT_NAME, *DESCRIPTION_OUTPUTS])] * 3
    assert all(r["classes"] == list(info.classes) for r in rows)
    assert all(r["model_version"] == info.version for r in rows)
    # the answer describes the model: the transformer needs no model files
    assert all(r["labels"] == [info.labels[s] for s in info.classes] for r in rows)
    assert all(r["confidence_threshold"] == info.confidence_threshold for r in rows)
    assert all((r["image_size"], r["jpeg_quality"]) == (IMAGE_SIZE, 90) for r in rows)
    predictions = np.array([r["probabilities"] for r in rows])
    assert predictions.shape == (3, 5)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predictions, expected, atol=1e-4)
    plain = http.post(url, json={"instances": [{"b64": b64(c)} for c in canonical]})
    plain_rows = [r["probabilities"] for r in plain.json()["predictions"]]
    np.testing.assert_allclose(plain_rows, expected, atol=1e-4)
    versioned = f"{stack.predictor_url}/v1/models/{MODEL_NAME}/versions/{info.version}:predict"
    assert http.post(versioned, json={"instances": [{"b64": b64(canonical[0])}]}).status_code == 200


def test_predictor_errors(stack, http, info):
    url = f"{stack.predictor_url}/v1/models/{MODEL_NAME}:predict"
    bad = http.post(url, json={"instances": [{"image_bytes": {"b64": "@@@"}}]})
    assert bad.status_code == 400 and "not valid base64" in bad.json()["error"]
    undecodable = http.post(url, json={"instances": [{"b64": b64(b"not a jpeg")}]})
    assert undecodable.status_code == 400 and undecodable.json()["error"]
    too_many = http.post(url, json={"instances": [{"b64": b64(b"x")}] * 33})
    assert too_many.status_code == 400 and "max_batch_size 32" in too_many.json()["error"]
    wrong_version = f"{stack.predictor_url}/v1/models/{MODEL_NAME}/versions/7:predict"
    response = http.post(wrong_version, json={"instances": [{"b64": b64(b"x")}]})
    assert response.status_code == 404
    assert "no version 7" in response.json()["error"]
    assert http.post(f"{stack.predictor_url}/v1/models/other:predict", json={}).status_code == 404
    # the transformer's URL forms only: classify/regress and version labels are not served
    assert (
        http.post(f"{stack.predictor_url}/v1/models/{MODEL_NAME}:classify", json={}).status_code
        == 404
    )


def test_predictor_replayed_the_warmup_records_before_serving(stack):
    """As TF Serving does at load: the port opened after the records ran, the explain
    signature's among them."""
    from snapcat.train.warmup import EXPLAIN_WARMUP_BATCH_SIZES, WARMUP_BATCH_SIZES

    records = len(WARMUP_BATCH_SIZES) + len(EXPLAIN_WARMUP_BATCH_SIZES)
    log = (stack.logs / "predictor.log").read_text(errors="replace")
    assert f"replayed {records} warm-up records" in log, log[-2000:]


def test_predictor_sized_its_threads_for_its_limit_and_the_model_backbone(stack, info):
    """As production's TF Serving flags are sized: the one rule, applied to this machine's CPU
    limit and the backbone the served model says it has (read before TensorFlow starts)."""
    from snapcat.contract.tf_serving_config import tf_serving_threads
    from snapcat.serve.container_limits import read_container_limits

    threads = tf_serving_threads(read_container_limits().cpus, info.backbone)
    log = (stack.logs / "predictor.log").read_text(errors="replace")
    expected = (
        f"TensorFlow threads for {threads.cpus:g} CPUs and {info.backbone}: "
        f"{threads.intra_op} intra-op, {threads.inter_op} inter-op"
    )
    assert expected in log, log[-2000:]


# ------------------------------------------------------------------------------------ transformer
def test_photo_formats(stack, http, info, reference, saved_labels):
    photos = {
        "jpeg": SAMPLE_DIR.joinpath("furniture-interior").glob("*.jpg").__next__().read_bytes(),
        "png-alpha": make_image_bytes("PNG", size=(300, 220), mode="RGBA", seed=11),
        "webp": make_image_bytes("WEBP", size=(240, 320), seed=12),
        "heic": make_image_bytes("HEIF", size=(320, 240), seed=13),
        "exif-rotated": make_image_bytes("JPEG", size=(320, 200), seed=14, orientation=6),
    }
    response = http.post(stack.predict_url, json=v1(*photos.values()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == str(info.version)
    assert len(body["predictions"]) == len(photos)
    for (name, photo), prediction in zip(photos.items(), body["predictions"], strict=True):
        try:
            assert_agrees(prediction["categories"], reference(photo), info, saved_labels)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_batches_keep_order(stack, http, info, reference, saved_labels):
    photos = [p.read_bytes() for p in sample_photos(MAX_BATCH)]
    batch = http.post(stack.predict_url, json=v1(*photos)).json()["predictions"]
    for photo, prediction in zip(photos, batch, strict=True):
        assert_agrees(prediction["categories"], reference(photo), info, saved_labels)
        # "confident": the top-3 sum of the served scores against model.json's threshold
        assert prediction["confident"] is bool(is_confident(reference(photo), 0.9)[0])
        single = http.post(stack.predict_url, json=v1(photo)).json()["predictions"][0]
        assert [c["slug"] for c in single["categories"]] == [
            c["slug"] for c in prediction["categories"]
        ]


def test_v2_protocol(stack, http, info, reference, saved_labels):
    photos = [make_image_bytes("JPEG", seed=21), make_image_bytes("PNG", seed=22)]
    request = {
        "id": "req-7",
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [2],
                "data": [b64(p) for p in photos],
            }
        ],
    }
    response = http.post(f"{stack.url}/v2/models/{MODEL_NAME}/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (
        MODEL_NAME,
        str(info.version),
        "req-7",
    )
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["slug"]["shape"] == outputs["score"]["shape"] == [2, 3]
    for i, photo in enumerate(photos):
        categories = v2_categories(body, i)
        assert_agrees(categories, reference(photo), info, saved_labels)
    assert outputs["confident"]["datatype"] == "BOOL" and outputs["confident"]["shape"] == [2]
    assert outputs["confident"]["data"] == [
        bool(is_confident(reference(photo), 0.9)[0]) for photo in photos
    ]
    ready = http.get(f"{stack.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


GOOD = make_image_bytes("JPEG", size=(200, 150), seed=31)
NOISE = np.random.default_rng(0).integers(0, 256, (620, 620, 3), dtype=np.uint8)


def _noise_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(NOISE).save(buffer, format="PNG")
    assert MAX_IMAGE_BYTES < len(buffer.getvalue()) < MAX_REQUEST_BYTES * 3 / 4
    return buffer.getvalue()


BAD_REQUESTS = {
    "invalid-json": (b"{not json", 400, ["Unrecognized request format"]),
    "not-an-object": (b"[1, 2]", 400, ["JSON object"]),
    "missing-instances": ({"images": []}, 400, ["missing field 'instances'"]),
    "empty": ({"instances": []}, 400, ["no images"]),
    "missing-field": (
        {"instances": [{"image_bytes": {"b64": b64(GOOD)}}, {"photo": {"b64": b64(GOOD)}}]},
        400,
        ["instance 1: missing-field"],
    ),
    "bad-base64": (
        {"instances": [{"image_bytes": {"b64": b64(GOOD)}}, {"image_bytes": {"b64": "*not*"}}]},
        400,
        ["instance 1: bad-base64"],
    ),
    "unsupported": (v1(GOOD, GOOD, b"%PDF-1.7\n%binary"), 400, ["instance 2: unsupported-format"]),
    "corrupt": (v1(GOOD[:200]), 400, ["instance 0: corrupt"]),
    "empty-file": (v1(b""), 400, ["instance 0: empty"]),
    "decompression-bomb": (v1(png_header_only(40000, 40000)), 400, ["decompression-bomb"]),
    "several": (
        v1(GOOD, b"", png_header_only(40000, 40000)),
        400,
        ["instance 1: empty", "instance 2: decompression-bomb"],
    ),
    "too-many": (v1(*[GOOD] * (MAX_BATCH + 1)), 400, [f"limit of {MAX_BATCH}"]),
    "image-over-cap": ("noise", 413, ["instance 0: too-large", "over the 977 KB limit"]),
    "request-over-cap": (b"x" * (MAX_REQUEST_BYTES + 1), 413, ["--max_request_bytes"]),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_refused_and_the_server_stays_healthy(stack, http, case):
    body, status, fragments = BAD_REQUESTS[case]
    if body == "noise":
        body = v1(_noise_png())
    if isinstance(body, bytes):
        response = http.post(
            stack.predict_url, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = http.post(stack.predict_url, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for fragment in fragments:
        assert fragment in error
    assert stack.transformer.poll() is None
    assert http.get(stack.ready_url).status_code == 200


def test_streamed_body_over_the_cap_is_413(stack, http):
    def chunks():
        for _ in range(4):
            yield b"x" * (MAX_REQUEST_BYTES // 3)

    response = http.post(stack.predict_url, content=chunks())
    assert response.status_code == 413
    assert "--max_request_bytes" in response.json()["error"]


def test_v2_metadata_describes_the_real_inputs_and_outputs(stack, http):
    """``GET /v2/models/<name>`` names what an infer request takes and what its answer holds:
    the same names, datatypes and ranks as a real answer (``-1``: the number of photos)."""
    metadata = http.get(f"{stack.url}/v2/models/{MODEL_NAME}")
    assert metadata.status_code == 200, metadata.text
    described = metadata.json()
    assert described["inputs"] == [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}]
    request = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                           "data": [b64(make_image_bytes("JPEG", seed=3))]}]}  # fmt: skip
    answer = http.post(f"{stack.url}/v2/models/{MODEL_NAME}/infer", json=request).json()
    real = [(o["name"], o["datatype"], len(o["shape"])) for o in answer["outputs"]]
    said = [(o["name"], o["datatype"], len(o["shape"])) for o in described["outputs"]]
    assert said == real and all(o["shape"][0] == -1 for o in described["outputs"])


def test_bad_v2_requests(stack, http):
    url = f"{stack.url}/v2/models/{MODEL_NAME}/infer"
    wrong_type = {
        "inputs": [{"name": "image_bytes", "datatype": "FP32", "shape": [1], "data": [1]}]
    }
    cases = [
        (wrong_type, "datatype BYTES"),
        (
            {"inputs": [{"name": "img", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
            "no input",
        ),
        ({"id": "1"}, "inputs: Field required"),
        (b"{oops", "invalid JSON"),
        (
            {
                "inputs": [
                    {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["@@"]}
                ]
            },
            "instance 0: bad-base64",
        ),
    ]
    for body, fragment in cases:
        if isinstance(body, bytes):
            response = http.post(url, content=body, headers={"content-type": "application/json"})
        else:
            response = http.post(url, json=body)
        assert response.status_code == 400, response.text
        assert fragment in response.json()["error"]


def test_still_serving_after_bad_inputs(stack, http, info, reference, saved_labels):
    response = http.post(stack.predict_url, json=v1(GOOD))
    assert response.status_code == 200
    assert_agrees(
        response.json()["predictions"][0]["categories"], reference(GOOD), info, saved_labels
    )


def test_metrics_per_stage_and_bytes_sent_to_the_predictor(stack, http):
    text = http.get(f"{stack.url}/metrics").text
    for metric in (
        "request_preprocess_seconds_bucket",
        "request_predict_seconds_bucket",
        "request_postprocess_seconds_bucket",
        "snapcat_normalize_seconds_bucket",
        "snapcat_predictor_call_seconds_bucket",
        'snapcat_request_errors_total{model_name="listing-category",reason="corrupt",status="400"}',
    ):
        assert metric in text, metric

    def value(name: str) -> float:
        match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
        return float(match.group(1))

    per_image = value("snapcat_predictor_request_bytes_total") / value(
        "snapcat_predictor_images_total"
    )
    assert per_image < 10_000  # canonical 71 px JPEGs as b64, not JSON floats
    # The transformer's CPU by stage (benchmarks/serving_bench.py splits it per photo): every
    # stage counted, each a positive CPU time, none more than the process has used.
    from serving.metrics import STAGES

    cpu = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^snapcat_transformer_stage_cpu_seconds_sum\{stage="(\w+)"\} (\S+)$', text, re.M
        )
    }
    assert set(cpu) == set(STAGES), cpu
    assert all(0 < seconds < 600 for seconds in cpu.values()), cpu


def test_concurrent_clients(stack, info, reference, saved_labels):
    photos = [make_image_bytes("JPEG", size=(300, 200), seed=40 + i) for i in range(6)]
    expected = [reference(p) for p in photos]

    def client(worker: int) -> list[tuple[int, dict]]:
        results = []
        with httpx.Client(timeout=60) as http:
            for j in range(3):
                i = (worker + j) % len(photos)
                response = http.post(stack.predict_url, json=v1(photos[i]))
                assert response.status_code == 200, response.text
                results.append((i, response.json()["predictions"][0]))
        return results

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = [r for rs in pool.map(client, range(8)) for r in rs]
    assert len(outcomes) == 24
    for i, prediction in outcomes:
        assert_agrees(prediction["categories"], expected[i], info, saved_labels)


def test_classify_cli(stack, tmp_path, saved_labels):
    photo = sample_photos(1)[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    command = [sys.executable, "-m", "snapcat.cli", "classify", "--url", stack.url]
    table = subprocess.run(
        [*command, str(photo)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert table.returncode == 0, table.stderr
    assert "httpx" not in table.stderr  # no log line per request without -v
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PHOTO", "#", "CATEGORY", "SLUG", "SCORE", "CONFIDENT"]
    assert lines[1].split()[-1] in ("yes", "no")
    assert len(lines) == 4 and str(photo) in lines[1]
    assert any(label in lines[1] for label in saved_labels.values())
    raw = subprocess.run(
        [*command, "--json", *[str(photo)] * 40],  # more than the server's 32 per request
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert raw.returncode == 0, raw.stderr
    assert len(json.loads(raw.stdout)["predictions"]) == 40
    bad = subprocess.run(
        [*command, str(photo), str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert bad.returncode == 1
    assert f"{broken}: HTTP 400: instance 0: corrupt" in bad.stderr
    assert str(photo) in bad.stdout  # the good photo is still classified


def test_python_client(stack, info, saved_labels):
    from snapcat.serve.client import SnapcatClient, SnapcatServerError

    photos = sample_photos(3)
    with SnapcatClient(stack.url, MODEL_NAME, max_batch=2) as client:
        assert client.ready()
        predictions = client.classify(photos)
        assert len(predictions) == 3
        assert all(p.model_version == str(info.version) for p in predictions)
        assert all(isinstance(p.confident, bool) for p in predictions)
        assert predictions[0].top.label == saved_labels[predictions[0].top.slug]
        with pytest.raises(SnapcatServerError) as caught:
            client.classify([b"GIF87a broken"])
        assert caught.value.status_code == 400
        assert caught.value.errors[0]["instance"] == 0


# ------------------------------------------------------------------------------------ explain
def test_predictor_serves_the_explain_signature(stack, http, info, reference):
    """TF Serving's REST call of a named signature: ``"signature_name": "explain"``, each row
    naming both inputs; the answer is predict's plus a heat map and the explained class."""
    canonical = [normalize_image(p.read_bytes(), info.spec) for p in sample_photos(3)]
    url = f"{stack.predictor_url}/v1/models/{MODEL_NAME}:predict"
    rows = [{"image_bytes": {"b64": b64(c)}, "class_index": i} for i, c in enumerate([*canonical])]
    rows[0]["class_index"] = -1
    answer = http.post(url, json={"signature_name": "explain", "instances": rows})
    assert answer.status_code == 200, answer.text
    found = answer.json()["predictions"]
    expected = reference.model.predict(canonical)
    np.testing.assert_allclose([r["probabilities"] for r in found], expected, atol=1e-4)
    assert [r["explained_class"] for r in found] == [int(expected[0].argmax()), 1, 2]
    heat = np.array([r["heat_map"] for r in found])
    assert heat.shape == (3, 14, 14) and heat.min() >= 0 and heat.max() <= 1
    wrong = {
        "signature_name": "explain",
        "instances": [{"image_bytes": {"b64": b64(canonical[0])}}],
    }
    refused = http.post(url, json=wrong)
    assert refused.status_code == 400 and "class_index" in refused.json()["error"]


def test_explain_route_answers_predicts_top3_with_overlays(stack, http, info, saved_labels):
    from PIL import Image

    photos = [p.read_bytes() for p in sample_photos(3)]
    body = v1(*photos)
    predicted = http.post(stack.predict_url, json=body).json()["predictions"]
    explain_url = f"{stack.url}/v1/models/{MODEL_NAME}:explain"
    body["instances"][2]["class_index"] = 4
    answer = http.post(explain_url, json=body)
    assert answer.status_code == 200, answer.text
    explained = answer.json()["predictions"]
    assert [p["categories"] for p in explained] == [p["categories"] for p in predicted]
    for prediction in explained[:2]:  # the top-1 unless a class is asked for
        explanation = prediction["explanation"]
        assert explanation["slug"] == prediction["categories"][0]["slug"]
        assert explanation["label"] == saved_labels[explanation["slug"]]
    assert explained[2]["explanation"]["slug"] == info.classes[4]
    for prediction in explained:
        explanation = prediction["explanation"]
        heat = np.array(explanation["heat_map"])
        assert heat.shape == (14, 14) and heat.min() >= 0 and heat.max() <= 1
        with Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"]))) as overlay:
            assert (overlay.format, overlay.size) == ("PNG", (IMAGE_SIZE, IMAGE_SIZE))
    bad = {"instances": [{"image_bytes": {"b64": b64(photos[0])}, "class_index": 5}]}
    refused = http.post(explain_url, json=bad)
    assert refused.status_code == 400 and "class_index" in refused.json()["error"]


def test_python_client_and_classify_cli_explain(stack, tmp_path):
    from PIL import Image

    from snapcat.serve.client import SnapcatClient

    photos = sample_photos(2)
    with SnapcatClient(stack.url, MODEL_NAME) as client:
        plain = client.classify(photos)
        explained = client.explain(photos)
        assert [p.categories for p in explained] == [p.categories for p in plain]
        assert explained[0].explanation.slug == plain[0].top.slug
        assert len(explained[0].explanation.heat_map) == 14
        assert explained[1].explanation.overlay_png.startswith(b"\x89PNG")
        assert client.explain(photos[:1], class_index=3)[0].explanation.class_index == 3
    out = tmp_path / "overlays"
    command = [sys.executable, "-m", "snapcat.cli", "classify", "--url", stack.url]
    result = subprocess.run(
        [*command, "--explain", "--overlay-dir", str(out), *map(str, photos)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["PHOTO", "#", "CATEGORY"]
    written = sorted(out.iterdir())
    assert [p.name for p in written] == sorted(f"{p.name}.explain.png" for p in photos)
    assert all(f"overlay: {p}" in result.stdout for p in written)
    with Image.open(written[0]) as overlay:
        assert overlay.format == "PNG"


def test_transformer_never_imports_tensorflow(stack):
    log = (stack.logs / "transformer.log").read_text(errors="replace")
    modules = [
        line.rsplit("|", 1)[-1].strip()
        for line in log.splitlines()
        if line.startswith("import time:")
    ]
    assert (
        "kserve" in modules and "serving.transformer" in modules
    )  # the log is what we think it is
    heavy = [m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
    assert not heavy, heavy


# ------------------------------------------------------------------------------------ failures
def test_hung_predictor_gives_503_within_the_timeout_then_recovers(stack, http):
    os.kill(stack.predictor.pid, signal.SIGSTOP)
    try:
        # The client gives up a little after the transformer's own predictor timeout: an
        # answer that does not come by then fails the test as httpx.ReadTimeout.
        response = http.post(stack.predict_url, json=v1(GOOD), timeout=PREDICTOR_TIMEOUT + 5)
        assert response.status_code == 503, response.text
        assert f"did not answer within {PREDICTOR_TIMEOUT:g} s" in response.json()["error"]
        assert http.get(stack.ready_url).status_code == 503
        assert http.get(f"{stack.url}/v2/health/ready").status_code == 503
    finally:
        os.kill(stack.predictor.pid, signal.SIGCONT)
    assert _poll_status(http, stack.ready_url, 200, timeout=20)
    assert http.post(stack.predict_url, json=v1(GOOD)).status_code == 200


def _poll_status(http, url: str, status: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http.get(url).status_code == status:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


def test_predictor_killed_mid_run_then_restarted(stack, http, info, reference, saved_labels):
    statuses: list[int] = []
    durations: list[float] = []
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set() and len(statuses) < 500:
                start = time.monotonic()
                statuses.append(client.post(stack.predict_url, json=v1(GOOD)).status_code)
                durations.append(time.monotonic() - start)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1.0)
        stack.predictor.kill()
        stack.predictor.wait(10)
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(60)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[0] == 200 and statuses[-1] == 503
    # Refused connections answer at once, not after the timeout.
    assert max(d for d, s in zip(durations, statuses, strict=True) if s == 503) < 1.5
    down = http.post(stack.predict_url, json=v1(GOOD))
    assert down.status_code == 503 and "unreachable" in down.json()["error"]
    assert http.get(stack.ready_url).status_code == 503
    assert http.get(f"{stack.url}/v2/health/ready").status_code == 503
    assert stack.transformer.poll() is None

    stack.start_predictor()  # same port: the transformer recovers by itself
    stack.wait_ready()
    response = http.post(stack.predict_url, json=v1(GOOD))
    assert response.status_code == 200
    assert_agrees(
        response.json()["predictions"][0]["categories"], reference(GOOD), info, saved_labels
    )


def test_a_transformer_started_as_before_ignores_model_dir_and_labels_from_the_predictor(
    stack, http, info, tmp_path, reference, saved_labels
):
    """A transformer started the way older manifests start it (``--model_dir`` naming a folder
    that does not exist): the flag is accepted and ignored with a log line, and the answers are
    labelled, sized and thresholded from the predictor's own description of its model."""
    port = free_port()
    log = tmp_path / "old-args.log"
    # Through the CLI this time: `snapcat serve transformer` replaces itself with python -m serving.
    process = spawn(
        [
            sys.executable,
            "-m",
            "snapcat.cli",
            "serve",
            "transformer",
            f"--predictor_host=127.0.0.1:{stack.predictor_port}",
            f"--http_port={port}",
            f"--model_name={MODEL_NAME}",
            f"--model_dir={tmp_path / 'no-such-model'}",
        ],
        log,
    )
    try:
        # 120 s only guards against a hang (it starts in ~6 s unloaded)
        wait_http_ok(f"http://127.0.0.1:{port}/v2/health/live", 120, [process])
        wait_http_ok(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}", 60, [process])
        response = http.post(
            f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict", json=v1(GOOD)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == str(info.version)
        categories = body["predictions"][0]["categories"]
        assert all(c["slug"] in info.classes for c in categories)
        assert_agrees(categories, reference(GOOD), info, saved_labels)
        text = log.read_text(errors="replace")
        assert "ignoring --model_dir" in text
        assert f"normalizing at {IMAGE_SIZE} px" in text
    finally:
        stop_process(process)


def test_serve_local_starts_both_and_stops_cleanly(model_dir, tmp_path):
    from snapcat.serve.client import SnapcatClient

    port, predictor_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapcat.cli",
            "serve",
            "local",
            f"--model-dir={model_dir}",
            f"--port={port}",
            f"--predictor-port={predictor_port}",
            f"--log-dir={tmp_path / 'logs'}",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "local.log", "wb"),  # noqa: SIM115
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and f"http://127.0.0.1:{port}" in lines[-1], (
            lines,
            (tmp_path / "local.log").read_text(errors="replace")[-3000:],
        )
        assert len(lines) == 1  # the banner is the first thing said
        with SnapcatClient(f"http://127.0.0.1:{port}") as client:
            for photo in sample_photos(3):
                assert len(client.classify_one(photo).categories) == 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        # Quiet by default: the servers' start-up and per-request lines went to their log
        # files, not to the terminal (which shows their warnings and errors).
        terminal = process.stdout.read() + (tmp_path / "local.log").read_text(errors="replace")
        assert "predict" not in terminal and "kserve.trace" not in terminal, terminal[-2000:]
        assert len(terminal.splitlines()) < 15, terminal[-2000:]
        # The log file has the transformer's start-up, and no line per successful request
        # unless asked (snapcat -v passes --verbose: uvicorn's access log, kserve.trace).
        transformer_log = (tmp_path / "logs" / "transformer.log").read_text(errors="replace")
        assert "serves model version" in transformer_log
        assert ":predict" not in transformer_log and "kserve.trace" not in transformer_log
        for p in (port, predictor_port):
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", p), timeout=2):
                pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ------------------------------------------------------------- hostile traffic (issue 10 findings)
BOMB_WEBP = REPO_ROOT / "tests" / "data" / "blank-16383x6100-lossless.webp"


def _log_since(stack, offset: int) -> str:
    return (stack.logs / "transformer.log").read_bytes()[offset:].decode(errors="replace")


def _log_size(stack) -> int:
    return (stack.logs / "transformer.log").stat().st_size


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def test_finding_1_management_routes_are_not_served_and_liveness_needs_the_model(stack, http):
    for verb in ("unload", "load"):
        response = http.post(f"{stack.url}/v2/repository/models/{MODEL_NAME}/{verb}")
        assert response.status_code == 404, response.text
    for path in ("/openapi.json", "/docs", "/v2/repository/index"):
        assert http.get(f"{stack.url}{path}").status_code == 404
    assert http.get(stack.ready_url).status_code == 200  # the model is still loaded
    assert http.post(stack.predict_url, json=v1(GOOD)).status_code == 200
    assert http.get(f"{stack.url}/v2/health/live").status_code == 200


def test_finding_2_a_few_kb_that_decode_to_gbs_are_refused_before_decoding(stack, http):
    bomb = BOMB_WEBP.read_bytes()
    assert len(bomb) < 5000  # 16383 x 6100 lossless WebP: ~1.7 GB to decode
    before = _rss_mb(stack.transformer.pid)
    response = http.post(stack.predict_url, json=v1(*[bomb] * 4), timeout=30)
    assert response.status_code == 413, response.text
    assert "over-decode-budget" in response.json()["error"]
    assert "per-photo decode budget" in response.json()["error"]
    assert _rss_mb(stack.transformer.pid) - before < 100  # nothing decoded (1.7 GB each)
    assert http.post(stack.predict_url, json=v1(GOOD)).status_code == 200


def test_finding_3_overload_is_shed_with_a_fast_503_and_retry_after(stack, model_dir, tmp_path):
    """A second transformer that admits one photo at a time: concurrent requests beyond it get an
    immediate 503 with Retry-After instead of queueing; every answer is 200 or 503."""
    port = free_port()
    command = transformer_command(
        predictor_host=f"127.0.0.1:{stack.predictor_port}",
        port=port,
        model_name=MODEL_NAME,
        extra=["--max_photos_in_flight=1", "--enable_latency_logging=false"],
    )
    process = spawn(command, tmp_path / "shedding.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/v1/models/{MODEL_NAME}", 120, [process])
        big = make_image_bytes("JPEG", size=(2000, 1500), seed=77)
        results: list[tuple[int, float, str | None]] = []

        def one(_):
            with httpx.Client(timeout=60) as client:
                start = time.monotonic()
                response = client.post(f"{url}/v1/models/{MODEL_NAME}:predict", json=v1(big))
                results.append(
                    (
                        response.status_code,
                        time.monotonic() - start,
                        response.headers.get("retry-after"),
                    )
                )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(8)))
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses and 503 in statuses, statuses
        shed = [r for r in results if r[0] == 503]
        assert all(r[2] == "1" for r in shed)
        assert min(r[1] for r in shed) < 2.0  # refused at once, not after queueing
    finally:
        stop_process(process)


def test_finding_4_unknown_model_names_do_not_create_metric_series(stack):
    with httpx.Client(timeout=30) as http:
        before = http.get(f"{stack.url}/metrics").text
        for i in range(150):
            http.post(f"{stack.url}/v1/models/random-{i}:predict", json=v1(GOOD))
            http.post(f"{stack.url}/v2/models/random-{i}/infer", content=b"{bad")
        after = http.get(f"{stack.url}/metrics").text
    labels = set(re.findall(r'model_name="([^"]*)"', after))
    assert labels <= {MODEL_NAME, "unknown", ""}, labels
    assert len(after) - len(before) < 5000
    assert re.search(r'snapcat_request_errors_total\{model_name="unknown".*status="404"\} ', after)


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_finding_5_header_limit_and_slow_clients(stack, http):
    before = _rss_mb(stack.transformer.pid)
    answer = _raw(stack.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    # Many unfinished huge headers at once cost nothing: each connection is cut at 64 KB.
    sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000)
            sockets.append(sock)
        assert _rss_mb(stack.transformer.pid) - before < 50
        start = time.monotonic()
        assert http.post(stack.predict_url, json=v1(GOOD)).status_code == 200
        assert time.monotonic() - start < 2.0
    finally:
        for sock in sockets:
            sock.close()
    # A request head that never finishes: 408 after the header timeout.
    start = time.monotonic()
    answer = _raw(stack.port, b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert HEADER_TIMEOUT - 0.2 < time.monotonic() - start < HEADER_TIMEOUT + 2
    # A body trickling in at a byte per 0.5 s: 408 after the body timeout.
    head = (
        f"POST /v1/models/{MODEL_NAME}:predict HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    start = time.monotonic()
    offset = _log_size(stack)
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        for _ in range(20):
            with contextlib.suppress(OSError):
                sock.sendall(b"{")
            sock.settimeout(0.5)
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - start < BODY_TIMEOUT + 2
    # The server logs the refusal after answering: wait for it, so that it is not counted among
    # the next test's log lines on a loaded machine.
    deadline = time.monotonic() + 10
    while "body-timeout" not in _log_since(stack, offset) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_finding_6_small_ones(stack, http):
    offset = _log_size(stack)
    # any content type was accepted
    response = http.post(stack.predict_url, content=b"a=b", headers={"content-type": "text/plain"})
    assert response.status_code == 415, response.text
    # V2 shape was not checked
    infer = f"{stack.url}/v2/models/{MODEL_NAME}/infer"
    element = {"name": "image_bytes", "datatype": "BYTES", "data": [b64(GOOD)]}
    assert http.post(infer, json={"inputs": [{**element, "shape": [1]}]}).status_code == 200
    for shape in ([3], [1, 2], [2, 1]):
        response = http.post(infer, json={"inputs": [{**element, "shape": shape}]})
        assert response.status_code == 400 and "shape" in response.json()["error"], shape
    # GET on :predict, malformed requests: one log line each, no traceback
    assert http.get(stack.predict_url).status_code in (404, 405)
    bad = http.post(
        stack.predict_url, content=b"{bad", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    # a client that disconnects mid-body is not a server error
    _raw(
        stack.port,
        (
            f"POST /v1/models/{MODEL_NAME}:predict HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{partial"
        ).encode(),
        timeout=0.5,
    )
    time.sleep(0.5)
    log = _log_since(stack, offset)
    assert "Traceback" not in log, log[-3000:]
    assert " 500" not in log and "HTTP 500" not in log, log[-3000:]
    refusals = [line for line in log.splitlines() if "snapcat.serving" in line and "HTTP " in line]
    assert len(refusals) == 1 + 3 + 2 + 1, "\n".join(refusals)
    assert any("client-disconnected" in line for line in refusals)
    # error counters saw the 400 KServe itself answered
    metrics = http.get(f"{stack.url}/metrics").text
    assert 'reason="invalid-input",status="400"' in metrics
    assert 'reason="unsupported-media-type",status="415"' in metrics
    # bound to loopback as asked, one port only (no gRPC)
    full_log = (stack.logs / "transformer.log").read_text(errors="replace")
    assert f"Uvicorn running on http://127.0.0.1:{stack.port}" in full_log
    import psutil

    listening = {
        c.laddr.port
        for c in psutil.Process(stack.transformer.pid).connections("inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {stack.port}


# ------------------------------------------------------------------------------ feedback loop
# The whole loop with these real processes and the feedback sink (tests/feedback/test_feedback.py):
# predict -> what KServe's payload logger sends (the request and the response as binary-mode
# CloudEvents with one id; in a cluster that is the agent sidecar of spec.transformer.logger)
# -> the seller's final category through the client -> `feedback collect` -> `prepare`; and the
# transformer's per-version metrics that `rollout analyze` reads.


def metric_lines(url: str, name: str) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


def test_predict_report_collect_prepare(stack, model_dir, tmp_path):
    version = str(load_model_info(str(model_dir)).version)
    classes = load_model_info(str(model_dir)).classes
    sink = Sink(tmp_path / "store", tmp_path / "sink.log", keys=stack.prediction_keys).start()
    try:
        client = SnapcatClient(
            stack.url, MODEL_NAME, feedback_url=sink.url, feedback_token=sink.token
        )
        # The client sees one id per photo.
        first = client.classify([make_image_bytes(seed=1), make_image_bytes(seed=2)])
        assert all(PREDICTION_ID.match(p.prediction_id) for p in first)
        assert first[0].prediction_id != first[1].prediction_id
        assert first[0].model_version == version

        # Calls as the app makes them, each logged as KServe's logger would.
        reported, agreed = {}, 0
        for i in range(8):
            photo = make_image_bytes(seed=10 + i)
            request = {"instances": [{"image_bytes": {"b64": base64.b64encode(photo).decode()}}]}
            response = httpx.post(stack.predict_url, json=request, timeout=60)
            assert response.status_code == 200, response.text
            answer = response.json()
            call_id = str(uuid.uuid4())
            assert logger_event(sink.logger_url, REQUEST_TYPE, call_id, request).status_code == 200
            assert logger_event(sink.logger_url, RESPONSE_TYPE, call_id, answer).status_code == 200
            # Issue 25: the same answer under another version is not the transformer's.
            forged = {**answer, "model_version": "999"}
            assert logger_event(sink.logger_url, RESPONSE_TYPE, "f", forged).status_code == 403
            prediction = answer["predictions"][0]
            suggested = [c["slug"] for c in prediction["categories"]]
            final = classes[i % 2]  # four photos each of two categories
            verdict = client.report_category(prediction["prediction_id"], final)
            assert verdict["model_version"] == version
            assert verdict["top1"] == (final == suggested[0])
            reported[prediction["prediction_id"]] = final
            agreed += final == suggested[0]

        # The transformer's per-version series, as `rollout analyze` queries them.
        bad = httpx.post(stack.predict_url, json={"instances": [{"b64": "bm90IGEgcGhvdG8="}]})
        assert bad.status_code == 400 and "prediction_id" not in bad.text
        requests = metric_lines(stack.url, "snapcat_model_requests_total")
        assert (
            requests[f'snapcat_model_requests_total{{model_version="{version}",outcome="ok"}}'] >= 9
        )
        assert requests[
            f'snapcat_model_requests_total{{model_version="{version}",outcome="client_error"}}'
        ] >= 1  # fmt: skip
        scores = metric_lines(stack.url, "snapcat_model_top1_score_count")
        assert scores[f'snapcat_model_top1_score_count{{model_version="{version}"}}'] >= 10
        per_category = metric_lines(stack.url, "snapcat_model_predictions_total")
        assert sum(per_category.values()) >= 10
        assert all(f'model_version="{version}"' in k for k in per_category)
        latency = metric_lines(stack.url, "snapcat_model_request_seconds_count")
        assert latency[f'snapcat_model_request_seconds_count{{model_version="{version}"}}'] >= 10
        agreement = metric_lines(sink.url, "snapcat_feedback_top1_agreements_total")
        assert (
            agreement[f'snapcat_feedback_top1_agreements_total{{model_version="{version}"}}']
            == agreed
        )
    finally:
        sink.kill()

    out = tmp_path / "collected"
    assert (
        main(["feedback", "collect", "--store", str(tmp_path / "store"), "--output", str(out)]) == 0
    )
    with open(out / "manifest.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["prediction_id"]: r["category"] for r in rows} == reported
    stats = run_prepare(PrepareConfig(
        input=str(out / "manifest.csv"), output=str(tmp_path / "prepared"), image_size=96,
        workers=1, min_images_per_class=2, test_fraction=0.25, validation_fraction=0.25,
        progress=False,
    ))  # fmt: skip
    assert stats["accepted"] == 8 and stats["rejected"] == 0


def test_v2_answers_carry_prediction_ids(stack):
    photos = [make_image_bytes(seed=s) for s in (30, 31)]
    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                        "data": [base64.b64encode(p).decode() for p in photos]}]}  # fmt: skip
    response = httpx.post(f"{stack.url}/v2/models/{MODEL_NAME}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    ids = outputs["prediction_id"]["data"]
    assert outputs["prediction_id"]["shape"] == [2] and len(set(ids)) == 2
    assert all(PREDICTION_ID.match(i) for i in ids)


@pytest.mark.parametrize("protocol, route", [("v1", ":predict"), ("v2", "/infer")])
def test_request_file_sent_with_curl_for_a_phone_sized_photo(stack, tmp_path, protocol, route):
    """The README's way to call the endpoint with curl: the body in a file (a phone photo's
    base64 is longer than a shell argument may be), written by ``snapcat request``."""
    import shutil

    from PIL import Image

    if not shutil.which("curl"):
        pytest.fail("curl is not installed (the README's example uses it)")
    rng = np.random.default_rng(0)
    photo = tmp_path / "phone.jpg"  # noise compresses badly
    Image.fromarray(rng.integers(0, 255, (420, 560, 3), dtype=np.uint8)).save(photo, quality=90)
    assert photo.stat().st_size > 200_000  # its base64 is over a shell argument's 128 KiB
    body = tmp_path / "request.json"
    made = subprocess.run(
        [sys.executable, "-m", "snapcat.cli", "request", str(photo), str(photo),
         "--protocol", protocol, "-o", str(body)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = (
        f"/v1/models/{MODEL_NAME}{route}" if protocol == "v1" else f"/v2/models/{MODEL_NAME}{route}"
    )
    sent = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "content-type: application/json",
         "--data-binary", f"@{body}", stack.url + path],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    answer = json.loads(sent.stdout)
    if protocol == "v1":
        assert len(answer["predictions"]) == 2
    else:
        assert len(v2_categories(answer, 1)) == 3
