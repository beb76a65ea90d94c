"""Training: the model, its backbones, augmentation, epoch selection, calibration fit and export.

The only floor that imports TensorFlow/Keras (deferred inside functions where a module also
serves the CLI's argument parsing). Imports :mod:`snapcat.contract`, :mod:`snapcat.imaging`,
:mod:`snapcat.dataset`, :mod:`snapcat.stats` and :mod:`snapcat.storage`; never
:mod:`snapcat.evaluate` or serving code.
"""
