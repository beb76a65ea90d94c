"""Tooling to run snapcat's serving on one machine (the demo, tests, benchmarks): a TF Serving
stand-in (:mod:`~snapcat.local.predictor`) and the processes around it. Not product: production
runs TF Serving and the transformer under KServe."""
