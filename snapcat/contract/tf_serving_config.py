"""TF Serving's batching and monitoring files, read the way TF Serving reads them.

Production's TF Serving takes ``--batching_parameters_file`` (a text-format ``BatchingParameters``,
``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``) and
``--monitoring_config_file`` (a text-format ``MonitoringConfig``,
``tensorflow_serving/config/monitoring_config.proto``); the files ship in ``manifests/``. The local
stand-in (:mod:`snapcat.local.predictor`) batches by the same file, and the tests check the shipped
files, so both need to parse them exactly as TF Serving does: unknown fields, wrong types and bad
syntax are errors, not ignored.

Neither message is in a Python package (tensorflow-serving-api ships only the API and model-server
protos), so the two messages are declared here, with TF Serving's field names, numbers and types,
as protobuf descriptors, and protobuf's own ``text_format`` parses them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2 as _wrappers  # noqa: F401 - registers wrappers.proto

from snapcat.errors import SnapcatError

#: The CPU sizing of the base manifests, packaged so an installed snapcat finds it too; it is a
#: byte-for-byte copy of ``manifests/base/tfserving/batching_parameters.txt`` (a test checks).
PACKAGED_BATCHING_PARAMETERS = "data/tfserving/batching_parameters.txt"

# TF's SharedBatchScheduler defaults for fields the file leaves unset (shared_batch_scheduler.h).
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10

_F = descriptor_pb2.FieldDescriptorProto
_INT64 = ".google.protobuf.Int64Value"
_FIELDS = {
    "BatchingParameters": [
        ("max_batch_size", 1, _F.TYPE_MESSAGE, _INT64),
        ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _INT64),
        ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _INT64),
        ("num_batch_threads", 4, _F.TYPE_MESSAGE, _INT64),
        ("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, None),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None),
        ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _INT64),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, None),
        ("path", 2, _F.TYPE_STRING, None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig"),
    ],
}


def _message_classes() -> dict[str, type]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="snapcat/tf_serving_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message_name, fields in _FIELDS.items():
        message = proto.message_type.add(name=message_name)
        for name, number, kind, type_name in fields:
            label = _F.LABEL_REPEATED if name == "allowed_batch_sizes" else _F.LABEL_OPTIONAL
            field = message.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
    # A private pool: nothing else in the process can clash with these names.
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_wrappers.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in _FIELDS
    }


_CLASSES = _message_classes()
BatchingParametersProto = _CLASSES["BatchingParameters"]
MonitoringConfigProto = _CLASSES["MonitoringConfig"]


class ConfigFileError(SnapcatError, ValueError):
    """A TF Serving config file that TF Serving would refuse (the message names file and cause)."""


def _parse(text: str, message_class: type, source: str):
    message = message_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigFileError(f"{source}: not a valid {message_class.__name__}: {exc}") from None
    return message


@dataclass(frozen=True)
class BatchingParameters:
    """The batching settings with TF Serving's defaults filled in for unset fields.

    ``num_batch_threads`` unset means one thread per CPU (TF's ``port::MaxParallelism()``)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int | None = None
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    source: str = "<defaults>"

    def __post_init__(self):
        if self.num_batch_threads is None:
            object.__setattr__(self, "num_batch_threads", os.cpu_count() or 1)
        problems = []
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, is {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            problems.append(f"batch_timeout_micros must be >= 0, is {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
                problems.append(
                    f"allowed_batch_sizes entries must be positive and increasing: {list(sizes)}"
                )
            if sizes[-1] != self.max_batch_size:
                # TF Serving's own words (bundle_factory_util.cc)
                problems.append(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{sizes[-1]}; expected {self.max_batch_size}"
                )
        if problems:
            raise ConfigFileError(f"{self.source}: " + "; ".join(problems))

    @property
    def batch_timeout(self) -> float:
        return self.batch_timeout_micros / 1e6

    def padded_size(self, size: int) -> int:
        """The batch size a batch of ``size`` is padded to: the smallest allowed size that holds
        it (TF Serving's ``RoundToLowestAllowedBatchSize``), or ``size`` itself."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> BatchingParameters:
        message = _parse(text, BatchingParametersProto, source)

        def value(name: str, default):
            return getattr(message, name).value if message.HasField(name) else default

        return cls(
            max_batch_size=value("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            batch_timeout_micros=value("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
            max_enqueued_batches=value("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
            num_batch_threads=value("num_batch_threads", None),
            allowed_batch_sizes=tuple(message.allowed_batch_sizes),
            pad_variable_length_inputs=message.pad_variable_length_inputs,
            enable_large_batch_splitting=value("enable_large_batch_splitting", False),
            source=source,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None) -> BatchingParameters:
        """Reads ``path``; without one, the packaged base (CPU) sizing."""
        if path is None:
            packaged = resources.files("snapcat").joinpath(PACKAGED_BATCHING_PARAMETERS)
            return cls.from_text(
                packaged.read_text("utf-8"), f"snapcat/{PACKAGED_BATCHING_PARAMETERS}"
            )
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(
                f"{path}: cannot read the batching parameters file: {exc}"
            ) from None
        return cls.from_text(text, str(path))


def read_monitoring_config(path: str | os.PathLike):
    """The ``MonitoringConfig`` message of a ``--monitoring_config_file``."""
    return _parse(Path(path).read_text("utf-8"), MonitoringConfigProto, str(path))


# ---------------------------------------------------------------------------- thread pools
#: TF Serving's REST threads per CPU: its own default is 4 x the CPUs it sees
#: (``tensorflow_serving/model_servers/main.cc``), which in a pod are the node's, not the limit's.
REST_API_THREADS_PER_CPU = 4


@dataclass(frozen=True)
class TfServingThreads:
    """TF Serving's thread pools for a container of ``cpus`` CPUs (:func:`tf_serving_threads`)."""

    cpus: float
    intra_op: int
    inter_op: int
    rest_api: int

    @property
    def flags(self) -> list[str]:
        """The ``tensorflow_model_server`` flags (names from TF Serving's ``main.cc``)."""
        return [
            f"--tensorflow_intra_op_parallelism={self.intra_op}",
            f"--tensorflow_inter_op_parallelism={self.inter_op}",
            f"--rest_api_num_threads={self.rest_api}",
        ]


#: Whether one op's kernel split across cores shortens a backbone's forward pass, measured per
#: backbone at its serving size (docs/serving.md, "TF Serving's threads"). Xception's 299-px
#: convolutions are large enough: 2 intra-op threads on 2 CPUs halved a batch-1 pass (104
#: against 186 ms) for the same CPU; InceptionV3's shortened it less (73 against 83 ms) and
#: halved a batch of 8. EfficientNet-Lite0's 224-px depthwise convolutions are not: a second
#: intra-op thread left its batch-1 pass as long (14 ms) and spun 50 % more CPU (22-23 against
#: 15 CPU-ms per photo). An unlisted backbone gets TensorFlow's usual sizing
#: (split) until it is measured; ``tests/contract/test_tf_serving_config.py`` fails for a
#: backbone the training code offers that is not listed here.
SPLITS_OPS_ACROSS_CORES: dict[str, bool] = {
    "xception": True,
    "inceptionv3": True,
    "efficientnet-lite0": False,
}

#: The annotation on an InferenceService's predictor naming the backbone its thread flags were
#: sized for; ``tests/test_manifests.py`` checks each overlay's flags against it.
SIZED_FOR_ANNOTATION = "snapcat.io/tfserving-threads-sized-for"


def tf_serving_threads(cpus: float, backbone: str) -> TfServingThreads:
    """TF Serving's thread pools sized to a container's CPU limit and the backbone it serves, the
    one rule production's manifests (every overlay's predictor args; ``tests/test_manifests.py``
    checks them) and the local predictor (:func:`snapcat.local.predictor.apply_tf_serving_threads`)
    follow.

    Unset, TF Serving sizes its pools from the CPUs it can schedule on, which in a pod are the
    node's cores (CFS quotas do not shrink the affinity mask): a 2-CPU predictor on a 64-core node
    runs 64 intra-op threads against a 2-CPU quota, and each CFS period ends with the quota spent
    and every thread throttled, the tail-latency trap. Sized here (docs/serving.md, "TF Serving's
    threads", has the measurement):

    - intra-op (the threads one op's kernels run on, e.g. a convolution): one per whole CPU of
      the limit, at least 1 (a fractional CPU is not a thread's worth of work), for a backbone
      whose ops are worth splitting (:data:`SPLITS_OPS_ACROSS_CORES`); 1 for one whose are not,
      so the CPUs run requests side by side (one batch thread each) instead of spinning;
    - inter-op (the threads that dispatch and run ops, side by side where the graph allows; each
      batch thread's ``Session::Run`` uses them): one per whole CPU, TensorFlow's own default
      ratio. One inter-op thread on 2 CPUs was slower, not leaner, with 2 intra-op threads;
    - REST threads: TF Serving's own 4 per CPU, of the limit. They mostly wait on the batching
      queue; they parse JSON and base64 requests between waits.
    """
    if not cpus > 0:
        raise ValueError(f"a CPU limit must be positive, got {cpus}")
    whole = max(1, math.floor(cpus))
    return TfServingThreads(
        cpus=cpus,
        intra_op=whole if SPLITS_OPS_ACROSS_CORES.get(backbone, True) else 1,
        inter_op=whole,
        rest_api=REST_API_THREADS_PER_CPU * whole,
    )
