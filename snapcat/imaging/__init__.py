"""Photo decoding and normalization: JPEG header, decode budget, colour, resize, canonical JPEG.

What a seller's photo goes through before a model sees it, shared byte for byte by data
preparation and the serving transformer. Imports only :mod:`snapcat.contract`, the standard
library, numpy, Pillow, pillow-heif, simplejpeg and cykooz-resizer; never TensorFlow.
"""
