"""The prepared-dataset record format: sharded TFRecords of canonical image bytes.

Written by ``snapcat prepare`` and read by the training input pipeline and ``snapcat evaluate``;
both sides use the feature description below, so the format is defined once. TensorFlow is
imported lazily: only the functions here that touch records need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Images per shard: ~15 MB at 299 px, small enough to read many shards in parallel.
SHARD_SIZE = 512


@dataclass(frozen=True)
class Record:
    image: bytes  # canonical JPEG bytes (snapcat.imaging.normalize)
    label: int  # index into the dataset's class order
    slug: str
    sha256: str  # of the original file
    source: str  # path relative to the input, for reports


def feature_spec():
    import tensorflow as tf

    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "slug": tf.io.FixedLenFeature([], tf.string),
        "sha256": tf.io.FixedLenFeature([], tf.string),
        "source": tf.io.FixedLenFeature([], tf.string),
    }


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def write_split(
    records: Sequence[Record], folder: Path, split: str, on_record=lambda: None
) -> list[str]:
    """Writes ``records`` round-robin into ceil(n / SHARD_SIZE) shards; returns their names.
    ``on_record`` is called after each record (a progress bar's update)."""
    import tensorflow as tf

    count = max(1, math.ceil(len(records) / SHARD_SIZE))
    names = [shard_name(split, i, count) for i in range(count)]
    writers = [tf.io.TFRecordWriter(str(folder / name)) for name in names]
    try:
        for i, record in enumerate(records):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": _bytes(record.image),
                        "label": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[record.label])
                        ),
                        "slug": _bytes(record.slug.encode()),
                        "sha256": _bytes(record.sha256.encode()),
                        "source": _bytes(record.source.encode()),
                    }
                )
            )
            writers[i % count].write(example.SerializeToString())
            on_record()
    finally:
        for writer in writers:
            writer.close()
    return names


def _bytes(value: bytes):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def read_split(folder: str, split: str) -> list[dict]:
    """Every record of a split as plain Python values (evaluation and tests; small splits)."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(f"{folder.rstrip('/')}/{split}-*.tfrecord"))
    spec = feature_spec()
    rows = []
    for serialized in tf.data.TFRecordDataset(files):
        parsed = tf.io.parse_single_example(serialized, spec)
        rows.append(
            {
                "image": parsed["image"].numpy(),
                "label": int(parsed["label"].numpy()),
                "slug": parsed["slug"].numpy().decode(),
                "sha256": parsed["sha256"].numpy().decode(),
                "source": parsed["source"].numpy().decode(),
            }
        )
    return rows
