"""Data preparation: listing sources, splits, normalized photos and TFRecord shards.

``snapcat prepare`` and the pipeline's prepare/fingerprint steps. Imports :mod:`snapcat.contract`,
:mod:`snapcat.imaging` and :mod:`snapcat.storage`; no TensorFlow (shards are written by hand).
"""
