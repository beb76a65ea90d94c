"""Serving: the transformer's core, the response, serving errors, the client, container limits.

Runs in the serving image, which has no TensorFlow: imports only :mod:`snapcat.contract`,
:mod:`snapcat.imaging`, :mod:`snapcat.serve`, :mod:`snapcat.errors`, the standard library and the
serving lock's packages (tests/test_layout.py checks it).
"""
