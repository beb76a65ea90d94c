"""TF Serving's batching and monitoring files in manifests/: they parse as TF Serving parses them,
bad files are refused with a clear error, and their sizes agree with the transformer's requests
and the export's warm-up records."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from snapcat.contract.tf_serving_config import (
    BatchingParameters,
    ConfigFileError,
    read_monitoring_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = REPO_ROOT / "manifests" / "base" / "tfserving"
PROD = REPO_ROOT / "manifests" / "overlays" / "prod" / "tfserving"
BATCHING_FILES = [BASE / "batching_parameters.txt", PROD / "batching_parameters.txt"]


def test_shipped_batching_files_parse_with_their_sizing():
    base = BatchingParameters.from_file(BASE / "batching_parameters.txt")
    assert (base.max_batch_size, base.batch_timeout_micros) == (32, 0)
    assert (base.num_batch_threads, base.max_enqueued_batches) == (2, 2)
    assert base.allowed_batch_sizes == ()
    prod = BatchingParameters.from_file(PROD / "batching_parameters.txt")
    assert (prod.max_batch_size, prod.batch_timeout_micros) == (32, 2000)
    assert (prod.num_batch_threads, prod.max_enqueued_batches) == (4, 4)
    assert prod.allowed_batch_sizes == (1, 8, 16, 32)
    assert [prod.padded_size(n) for n in (1, 2, 8, 9, 17, 32)] == [1, 8, 8, 16, 32, 32]


def test_the_packaged_default_is_the_base_file():
    """An installed snapcat has no manifests/: the stand-in's default is a packaged copy."""
    from importlib import resources

    from snapcat.contract.tf_serving_config import PACKAGED_BATCHING_PARAMETERS

    packaged = resources.files("snapcat").joinpath(PACKAGED_BATCHING_PARAMETERS).read_bytes()
    assert packaged == (BASE / "batching_parameters.txt").read_bytes()
    base = BatchingParameters.from_file(BASE / "batching_parameters.txt")
    default = BatchingParameters.from_file()
    assert dataclasses.replace(default, source=base.source) == base
    assert default.source == "snapcat/data/tfserving/batching_parameters.txt"


@pytest.mark.parametrize("path", BATCHING_FILES, ids=["base", "prod"])
def test_batch_sizes_fit_the_transformer_and_the_warmup_records(path):
    from snapcat.serve.transformer_core import DEFAULT_MAX_BATCH
    from snapcat.train.warmup import WARMUP_BATCH_SIZES

    parameters = BatchingParameters.from_file(path)
    # every predictor request of the transformer fits one batch (no batch splitting)
    assert parameters.max_batch_size >= DEFAULT_MAX_BATCH
    assert not parameters.enable_large_batch_splitting
    # TF Serving replays warm-up records through the batching layer: each must fit a batch, and
    # every padded batch shape must be one a record warms
    assert max(WARMUP_BATCH_SIZES) <= parameters.max_batch_size
    assert set(parameters.allowed_batch_sizes) <= set(WARMUP_BATCH_SIZES)
    assert 1 in WARMUP_BATCH_SIZES


def test_monitoring_config_enables_prometheus():
    config = read_monitoring_config(BASE / "monitoring_config.txt")
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_batch_size: 8", 'Expected "{"'),  # a wrapper message, not a plain integer
        (
            "max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }",
            'no field named "max_batch_sise"',
        ),
        ('batch_timeout_micros { value: "soon" }', "Couldn't parse integer"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1"),
        ("max_enqueued_batches { value: -1 }", "max_enqueued_batches must be >= 1"),
        (
            "max_batch_size { value: 16 }\nallowed_batch_sizes: [4, 8]",
            "Last entry in allowed_batch_sizes must match max_batch_size",
        ),
        ("max_batch_size { value: 8 }\nallowed_batch_sizes: [8, 4, 8]", "increasing"),
        ("max_batch_size { value: 8 ", "Expected"),
    ],
)
def test_bad_batching_files_are_refused(tmp_path, text, fragment):
    path = tmp_path / "batching.txt"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as caught:
        BatchingParameters.from_file(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)  # names the file


def test_unset_fields_take_tf_serving_defaults():
    parameters = BatchingParameters.from_text("")
    assert parameters.max_batch_size == 1000
    assert parameters.batch_timeout_micros == 0
    assert parameters.max_enqueued_batches == 10
    assert parameters.num_batch_threads >= 1
    assert parameters.padded_size(7) == 7


@pytest.mark.parametrize("server", ["predictor", "local"])
def test_serve_refuses_a_bad_file_before_loading(tmp_path, server):
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 32 }\nmax_batch_timeout { value: 1 }\n")
    result = subprocess.run(
        [sys.executable, "-m", "snapcat.cli", "serve", server, "--model-dir", str(tmp_path),
         "--batching-parameters-file", str(bad)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    assert str(bad) in result.stderr and "max_batch_timeout" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("cpus", "backbone", "intra", "inter", "rest"),
    [
        (0.5, "xception", 1, 1, 4),
        (1, "xception", 1, 1, 4),
        (1.5, "xception", 1, 1, 4),
        (2, "xception", 2, 2, 8),
        (4, "inceptionv3", 4, 4, 16),
        (64, "xception", 64, 64, 256),
        (1, "efficientnet-lite0", 1, 1, 4),
        (2, "efficientnet-lite0", 1, 2, 8),
        (4, "efficientnet-lite0", 1, 4, 16),
        (2, "a-backbone-not-measured-yet", 2, 2, 8),
    ],
)
def test_tf_serving_threads_follow_the_cpu_limit_and_backbone(cpus, backbone, intra, inter, rest):
    from snapcat.contract.tf_serving_config import tf_serving_threads

    threads = tf_serving_threads(cpus, backbone)
    assert (threads.intra_op, threads.inter_op, threads.rest_api) == (intra, inter, rest)
    assert threads.flags == [
        f"--tensorflow_intra_op_parallelism={intra}",
        f"--tensorflow_inter_op_parallelism={inter}",
        f"--rest_api_num_threads={rest}",
    ]


def test_every_trainable_backbone_has_a_measured_thread_sizing():
    """A backbone added to training without its op-splitting measurement would be served with
    TensorFlow's usual sizing, unmeasured: list it in ``SPLITS_OPS_ACROSS_CORES`` first."""
    from snapcat.contract.tf_serving_config import SPLITS_OPS_ACROSS_CORES
    from snapcat.train.modeling import BACKBONES

    assert set(SPLITS_OPS_ACROSS_CORES) == set(BACKBONES)


def test_tf_serving_threads_refuse_a_non_positive_limit():
    from snapcat.contract.tf_serving_config import tf_serving_threads

    with pytest.raises(ValueError, match="positive"):
        tf_serving_threads(0, "efficientnet-lite0")
