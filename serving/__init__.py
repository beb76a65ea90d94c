"""The listing-category KServe transformer (``python -m serving``), laid out like KServe's
``python/custom_transformer``:

- :mod:`serving.transformer`: the ``kserve.Model`` subclass (preprocess, predict, postprocess,
  health) around :class:`snapcat.serve.transformer_core.TransformerCore`, with
  :mod:`serving.predictor_client` (TF Serving's REST API) and
  :class:`snapcat.serve.admission.Admission` (photos in flight);
- :mod:`serving.server`: ``kserve.ModelServer`` with the transformer's uvicorn settings, routes and
  health semantics; :mod:`serving.http_layer` (request guard, error handlers) and
  :mod:`serving.connection` (header limit and timeout) beneath it;
- :mod:`serving.capacity`: in-flight limits sized from the container's CPU and memory;
- :mod:`serving.metrics`: the transformer's Prometheus metrics, with bounded labels;
  :mod:`serving.version_metrics`: the per-model-version ones (a middleware that only times and
  counts);
- :mod:`serving.kserve_adapter`: every private or undocumented KServe hook used, each tested;
- :mod:`serving.__main__`: the flags.

This package never imports TensorFlow: the serving image does not install it.
"""
