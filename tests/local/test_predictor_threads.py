"""The local predictor sizes TensorFlow's pools as production's TF Serving flags are sized."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from snapcat.contract.tf_serving_config import tf_serving_threads

_PROBE = """
import json, sys
from snapcat.local.predictor import apply_tf_serving_threads
import tensorflow as tf
apply_tf_serving_threads(float(sys.argv[1]), backbone=sys.argv[2])
print(json.dumps([tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads()]))
"""


@pytest.mark.parametrize(("cpus", "backbone"), [(2, "efficientnet-lite0"), (2, "xception")])
def test_tensorflow_runs_with_the_pools_the_rule_gives(cpus, backbone):
    """What TensorFlow reports after the call, in a fresh process (the pools can only be set
    before its runtime starts): the sizes of the flags production passes for the same limit and
    backbone."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(cpus), backbone],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = tf_serving_threads(cpus, backbone)
    assert json.loads(result.stdout.splitlines()[-1]) == [expected.intra_op, expected.inter_op]
