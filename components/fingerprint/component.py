"""Fingerprint: the input's listing -> a data version string, the prepare step's cache key.

KFP caches a step on its inputs. A bucket URI alone would let a retrain on the same bucket reuse
last week's prepared dataset; with the listing's fingerprint among prepare's inputs, the cache is
hit exactly when the photos are the same. This step itself is never cached.
"""

from kfp import dsl


def fingerprint(input_uri: str, data_version: str) -> str:
    """``data_version`` when given (a dataset release name, say), else the listing fingerprint
    (every file's path, size and ETag/MD5/modification time, no photo read)."""
    if data_version:
        return data_version
    from snapcat.dataset.sources import fingerprint as listing_fingerprint

    return listing_fingerprint(input_uri)


def build(image: str):
    return dsl.component(fingerprint, base_image=image, install_kfp_package=False)
