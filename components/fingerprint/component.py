"""Fingerprint: the input's listing -> a data version string, the prepare step's cache key.

KFP caches a step on its inputs. A bucket URI alone would let a retrain on the same bucket reuse
last week's prepared dataset; with the listing's fingerprint among prepare's inputs, the cache is
hit exactly when the photos are the same. This step itself is never cached.
"""

from kfp import dsl


def fingerprint(input_uri: str, data_version: str, relabel: str = "", exclude: str = "") -> str:
    """``data_version`` when given (a dataset release name, say), else the listing fingerprint
    (every file's path, size and ETag/MD5/modification time, no photo read); with a reviewed
    label audit (``relabel``/``exclude`` CSVs), followed by a digest of their contents, so an
    edited review changes the cache key even under the same release name."""
    from snapcat.dataset.corrections import review_fingerprint

    if data_version:
        version = data_version
    else:
        from snapcat.dataset.sources import fingerprint as listing_fingerprint

        version = listing_fingerprint(input_uri)
    review = review_fingerprint(relabel, exclude)
    return f"{version};{review}" if review else version


def build(image: str):
    return dsl.component(fingerprint, base_image=image, install_kfp_package=False)
