"""Batch prediction: the exported model over any number of photos, one JSON line per photo.

:mod:`~snapcat.batch.inputs` streams what to predict (a folder, a manifest or a bucket prefix),
:mod:`~snapcat.batch.results` appends and resumes the JSONL output, :mod:`~snapcat.batch.predict`
runs the model in bounded batches with the serving normalization, and
:mod:`~snapcat.batch.sharding` splits an input into shard manifests and merges shard outputs (the
KFP pipeline's first and last steps).
"""
