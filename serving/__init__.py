"""The listing-category KServe transformer (``python -m serving``), laid out like KServe's
``python/custom_transformer``: :mod:`serving.model` holds the ``kserve.Model`` subclass, and
:mod:`serving.__main__` parses KServe's standard flags plus a few of its own and starts
``kserve.ModelServer``. The logic it runs lives in :mod:`snapcat.inference`.

This package never imports TensorFlow: the serving image does not install it.
"""
