"""How much work one transformer process takes on at once, sized from its container's limits.

Measured on 2 cores (``benchmarks/soak.py``): a 12 MP phone JPEG takes ~0.1 s of CPU to receive,
decode (at 1/8 scale) and normalize; so ``PHOTOS_PER_CPU`` photos in flight per CPU keep the worst
queueing delay well under a second, and anything beyond is refused at once with 503 +
``Retry-After`` (another replica, or the same one a moment later, serves it) instead of queueing
for many seconds.

Memory: the process's baseline (Python, KServe, Pillow: ``BASELINE_BYTES``) comes off the
container's limit; of the rest (less ``HEADROOM``), ``DECODE_SHARE`` is the decode budget shared
by all photos being decoded (:class:`snapcat.imaging.decode_budget.DecodeBudget`) and the remainder holds
request bodies in flight, each costing about ``BODY_COPIES`` times its size (the bytes, the parsed
JSON, the decoded photos).
"""

from __future__ import annotations

from dataclasses import dataclass

from snapcat.serve.container_limits import ContainerLimits

PHOTOS_PER_CPU = 4
BASELINE_BYTES = 200 * 1024 * 1024
HEADROOM = 0.15
DECODE_SHARE = 0.5
BODY_COPIES = 3
#: What a process without a memory limit (a laptop, CI) plans for.
UNLIMITED_MEMORY_PLAN = 2 * 1024**3


@dataclass(frozen=True)
class Capacity:
    workers: int = 2  # normalization threads
    max_photos: int = 8  # photos admitted at once; more is HTTP 503 with Retry-After
    max_requests: int = 16  # inference requests in flight (reading, normalizing, predicting)
    decode_budget_bytes: int = 512 * 1024 * 1024  # decode memory of all photos at once
    body_bytes_in_flight: int = 128 * 1024 * 1024  # request bodies held at once


def plan_capacity(
    limits: ContainerLimits, *, max_photos: int = 0, decode_budget_bytes: int = 0
) -> Capacity:
    """The capacity for ``limits``; a non-zero argument overrides the computed value."""
    photos = max_photos or max(2, round(PHOTOS_PER_CPU * limits.cpus))
    memory = limits.memory_bytes or UNLIMITED_MEMORY_PLAN
    usable = max(64 * 1024 * 1024, int((memory - BASELINE_BYTES) * (1 - HEADROOM)))
    decode = decode_budget_bytes or int(usable * DECODE_SHARE)
    bodies = max(8 * 1024 * 1024, (usable - decode) // BODY_COPIES)
    return Capacity(
        workers=limits.whole_cpus,
        max_photos=photos,
        max_requests=2 * photos,
        decode_budget_bytes=decode,
        body_bytes_in_flight=bodies,
    )
