"""Label audit: likely mislabelled and ambiguous photos, ranked by confident learning.

:mod:`~snapcat.audit.features` turns a prepared dataset into frozen EfficientNet-Lite0 features,
:mod:`~snapcat.audit.ranking` gets out-of-sample probabilities (k-fold logistic regression) and
ranks label issues with cleanlab, :mod:`~snapcat.audit.gallery` writes the ranked CSV and the
HTML gallery, and :mod:`~snapcat.audit.run` ties them for ``snapcat audit`` (a prepared dataset,
or batch prediction output whose photos carry the category they were posted in).
"""
