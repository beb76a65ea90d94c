"""The contract: what crosses a process boundary, read by every image (training, serving, light).

The serving signature's names, the image spec, what a model carries beside its weights
(``model.json``), the taxonomy, the ``confident`` rule and its bound, the live metric names, the
service name and TF Serving's batching file. The lowest floor: it imports only the standard
library, numpy, PyYAML and fsspec, never another snapcat floor, and never TensorFlow.
"""
