"""The newcomer's walkthrough, run as written: README.md's shell commands in order, then the
commands docs/ adds that run without a cluster, each in a fresh folder with the repository's
sample data, through the installed ``snapcat`` and a real shell.

What a reader fills in (``photo.jpg``, ``MODEL_DIR``, ``HOST``, ...) comes from
:data:`PLACEHOLDERS`. What cannot run on one machine without a cluster, a bucket or the internet is
in :data:`NOT_RUN`, each with its reason. Every documented command must be one or the other
(:func:`test_every_documented_command_is_run_or_has_a_reason`, in the default run), so a new
command in the docs is either walked or its reason written down. The walk itself trains two
models: it is ``long`` (``make test-long``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_docs_commands import shell_blocks

from snapcat.contract.taxonomy import Taxonomy
from snapcat.local.processes import free_port, wait_http_ok

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
BIN = Path(sys.executable).parent

#: Documented commands that are not run here, and why (matched with ``re.search``).
NOT_RUN: list[tuple[str, str]] = [
    (
        r"^make (demo|test)\b",
        "the set-up commands: CI runs `make test`; tests/test_demo.py the demo",
    ),
    (r"^kubectl ", "needs a Kubernetes cluster"),
    (
        r"^(kind |bash kserve-|KUBECONFIG=)",
        "creates or uses a real cluster (docs/deploy.md's cluster tests)",
    ),
    (
        r"^docker (build|push|run)",
        "needs Docker Hub and a registry; `make image-test` builds and runs the images here",
    ),
    (r"^scripts/build-image.sh", "`make image-test` runs it"),
    (r"^python -m serving", "the transformer `serve local` starts, walked by it"),
    (
        r"benchmarks/real_photos.py",
        "builds the real-photo check set: tests/train's long tests run it",
    ),
    (r"^snapcat rollout (canary|status|rollback)\b", "needs a cluster with KServe (tests/rollout)"),
    (r"^snapcat rollout promote -n \S+ --model-uri", "sends to a cluster (tests/rollout)"),
    (r"^snapcat rollout (analyze|canary .*--auto)", "needs Prometheus (tests/rollout)"),
    (
        r"gs://bucket/(listings/manifest|prepared)",
        "reads and writes a bucket (tests/dataset: fsspec memory://)",
    ),
    (
        r"^snapcat (batch-)?pipeline submit (?!.*--dry-run)",
        "submits to a KFP cluster (tests/pipelines)",
    ),
    (
        r"^snapcat pipeline run-local --runner docker",
        "needs Docker and the images (make image-test)",
    ),
    (
        r"^snapcat train --data runs/prepared --output runs/model$",
        "downloads Xception's weights (no internet here)",
    ),
    (r"--backbone inceptionv3", "downloads InceptionV3's weights (no internet here)"),
    (r"--baseline-isvc", "reads the production InferenceService from a cluster"),
    (r"^snapcat evaluate \.\.\.", "an elision: the reader fills in the rest"),
    (
        r"^snapcat compare runs/eval-xception",
        "needs three Xception/InceptionV3 runs (no weights here)",
    ),
    (
        r"^snapcat serve (predictor|transformer)\b",
        "the two processes `serve local` starts, walked by it",
    ),
    (
        r"--batching-parameters-file",
        "`serve local` walked with its defaults; batching: tests/local",
    ),
    (r"runs/prepared-224|\.cache/real-photos", "the real-photo check set: tests/train (long)"),
]

#: What the reader fills in, in the order they are replaced. ``{port}`` and ``{python}`` are the
#: walk's own.
PLACEHOLDERS: list[tuple[str, str]] = [
    ("http://listing-category.snapcat.example.com", "http://127.0.0.1:{port}"),
    ("http://HOST/", "http://127.0.0.1:{port}/"),
    ("--port 8080", "--port {port}"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:{port}"),
    ("MODEL_DIR", "runs/model"),
    ("s3://models/listing-category/1796000000", "runs/model"),  # production: the same model
    ("runs/eval-a runs/eval-b", "runs/eval runs/local-eval"),
    ("gs://bucket/listings/", "data/sample/"),  # the catalogue: the sample
    ("--input data/listings ", "--input data/sample "),
    ("--input listings.csv", "--input data/sample/manifest.csv"),
    (
        "reviewed-relabel.csv",
        "runs/audit/label_issues.csv",
    ),  # reviewed: taken as the audit wrote it
    ("reviewed.csv", "runs/audit/label_issues.csv"),
]


@dataclass
class Step:
    where: str
    line: str  # as documented (continuations joined)


def _logical_lines(block: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", block)
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def documented_lines(document: Path) -> list[Step]:
    """Every command line of a document's shell blocks, comments and output dropped."""
    steps = []
    for block in shell_blocks(document.read_text("utf-8")):
        for line in _logical_lines(block):
            steps.append(Step(document.name, line.split(" #")[0].strip()))
    return steps


def reason_not_run(line: str) -> str | None:
    for pattern, reason in NOT_RUN:
        if re.search(pattern, line):
            return reason
    return None


def python_blocks(document: Path) -> list[str]:
    blocks, current = [], None
    for line in document.read_text("utf-8").splitlines():
        if line.strip().startswith("```"):
            if current is None and line.strip() == "```python":
                current = []
            elif current is not None:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def walk_plan() -> list[Step]:
    """README's lines in order, then docs/' lines that README does not already walk."""
    plan = [s for s in documented_lines(README) if not reason_not_run(s.line)]
    seen = {s.line for s in plan}
    for document in DOCS:
        for step in documented_lines(document):
            if step.line not in seen and not reason_not_run(step.line):
                plan.append(step)
                seen.add(step.line)
    return plan


def test_every_documented_command_is_run_or_has_a_reason():
    """The walk's plan holds every documented line that has no reason not to run, and the plan
    is what a newcomer follows: the README's prepare → train → evaluate → serve → classify."""
    plan = walk_plan()
    lines = [s.line for s in plan]
    order = [
        "snapcat prepare",
        "snapcat train",
        "snapcat evaluate",
        "snapcat serve local",
        "snapcat classify",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert positions == sorted(positions), lines
    assert any(line.startswith("curl ") for line in lines)
    every = [s for d in (README, *DOCS) for s in documented_lines(d)]
    assert len(every) > 40
    for step in every:
        assert step.line in lines or reason_not_run(step.line), step
    assert len(python_blocks(README)) == 1


def _fill(line: str, port: int) -> str:
    for placeholder, value in PLACEHOLDERS:
        line = line.replace(placeholder, value.format(port=port))
    return re.sub(r"\[([^\[\]]*)\]", r"\1", line)  # optional parts written in


def _prepare_folder(folder: Path) -> None:
    """What a fresh clone has (the sample data, the manifests) and what the reader brings: two
    phone photos (one of them HEIC) and a sofa, and the live InferenceService (``kubectl get isvc -o
    yaml``: here the object manifests/base deploys)."""
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    for name in ("data", "manifests"):
        shutil.copytree(REPO / name, folder / name)
    (folder / "pipelines").mkdir()
    photos = sorted((REPO / "data/sample/furniture-interior").glob("*.jp*g"))
    shutil.copy(photos[0], folder / "photo.jpg")
    shutil.copy(photos[0], folder / "photo1.jpg")
    shutil.copy(photos[2], folder / "sofa.jpg")
    Image.open(photos[-1]).convert("RGB").save(folder / "photo2.heic", format="HEIF")
    shutil.copy(REPO / "snapcat/data/kserve/inferenceservice.yaml", folder / "live.yaml")
    (folder / "reviewed-exclude.csv").write_text(
        f"path\n{photos[1].relative_to(REPO / 'data/sample')}\n"
    )


def _needs_server(command: str, port: int) -> bool:
    return f"127.0.0.1:{port}" in command and not command.startswith("snapcat serve local")


class Walk:
    """The walk's shell: each command through bash in the walk's folder, the server in the
    background, a transcript of every command and the end of its output."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        self.server: subprocess.Popen | None = None
        self.transcript: list[str] = []

    def run(self, command: str, where: str, timeout: float = 900) -> str:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.transcript.append(f"$ {command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        assert done.returncode == 0, (
            f"{where}: `{command}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def start_server(self, command: str) -> None:
        log = open(self.folder / "serve.log", "wb")  # noqa: SIM115 (open as long as the server)
        self.server = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.transcript.append(f"$ {command} &")
        url = f"http://127.0.0.1:{self.port}/v1/models/listing-category"
        wait_http_ok(url, 240, [self.server], interval=1)

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)


@pytest.mark.long
@pytest.mark.timeout(3600)  # two trainings on two cores: ~6 minutes alone, more beside other work
def test_walkthrough_runs_as_written(tmp_path):
    """Prepare, train, evaluate, compare, the pipeline on kfp.local, the request file and curl,
    batch prediction and the label audit with a reviewed prepare, the local server, classify, the
    dry runs, the Python client: each exits 0 and says what the
    docs say it says."""
    _prepare_folder(tmp_path)
    walk = Walk(tmp_path, free_port())
    plan = [(step, _fill(step.line, walk.port)) for step in walk_plan()]
    serve = next(command for _, command in plan if command.startswith("snapcat serve local"))
    compare = next(command for _, command in plan if command.startswith("snapcat compare"))
    try:
        for step, command in plan:
            if command == compare:
                continue  # its second run is the pipeline's evaluation: after run-local
            if command.startswith("snapcat serve local"):
                if walk.server is None:
                    walk.start_server(command)
                continue
            if _needs_server(command, walk.port) and walk.server is None:
                walk.start_server(
                    serve
                )  # the README calls the endpoint before it says how to run one
            out = walk.run(command, step.where)
            if command.startswith("snapcat pipeline run-local"):
                evaluations = sorted((tmp_path / "runs/local").rglob("metrics.json"))
                assert evaluations, "run-local left no evaluation where its summary says"
                shutil.copytree(evaluations[0].parent, tmp_path / "runs/local-eval")
                walk.run(compare, step.where)
            if command.startswith("snapcat predict"):
                assert (tmp_path / "results.jsonl").stat().st_size > 0
            if command.startswith("snapcat audit --data"):
                assert (tmp_path / "runs/audit/label_issues.csv").exists(), out
            if command.startswith("curl"):
                assert '"predictions"' in out and '"prediction_id"' in out, out
            if "--explain" in command:
                assert sorted((tmp_path / "overlays").glob("*.png")), out
            elif command.startswith("snapcat classify"):
                names = (
                    ["photo1.jpg", "photo2.heic"] if "photo2.heic" in command else ["photo1.jpg"]
                )
                if "--json" in command:
                    assert out.count('"categories"') == len(names), out
                else:
                    assert all(name in out for name in names), out
            if command.startswith("snapcat rollout promote"):
                assert "kind: InferenceService" in out, out
        assert walk.server is not None, "the walk never started the server"
        client = _fill(python_blocks(README)[0], walk.port)
        out = walk.run(f"{sys.executable} - <<'PYTHON'\n{client}\nPYTHON", "README.md client")
        assert out.split()[0] in {c.slug for c in Taxonomy.load().categories}, out
    finally:
        walk.stop_server()
        transcript = os.environ.get("WALKTHROUGH_TRANSCRIPT")
        if transcript:
            Path(transcript).write_text("\n".join(walk.transcript), "utf-8")
