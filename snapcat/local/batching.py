"""Server-side batching for the local predictor, by TF Serving's rules and parameters.

Production's TF Serving runs with ``--enable_batching`` and a ``BatchingParameters`` file
(:mod:`snapcat.contract.tf_serving_config`); this follows the same parameters with the semantics of TF's
``SharedBatchScheduler`` and TF Serving's ``BatchingSession``, so local latency and throughput
figures describe production's batching rather than a friendlier scheme:

- A request is one task of as many rows as it has images. A task never spans batches: one larger
  than ``max_batch_size`` is refused (:class:`TaskTooLargeError`, TF Serving's INVALID_ARGUMENT),
  one that does not fit the open batch closes it and opens the next.
- At most ``max_enqueued_batches`` batches wait (the open one included); a task that needs one more
  is refused at once (:class:`QueueFullError`, TF Serving's UNAVAILABLE: HTTP 503).
- ``num_batch_threads`` batches run at a time. A free thread takes the oldest closed batch, else
  the open batch once it is full or its first task has waited ``batch_timeout_micros`` (0: at
  once, whatever is queued).
- A batch is padded up to the smallest of ``allowed_batch_sizes`` that holds it, with copies of
  the last task's first row; padding rows are dropped from the answers.
- A batch that fails fails every request in it (as in TF Serving: one graph call).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from snapcat.contract.tf_serving_config import BatchingParameters, ConfigFileError

logger = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


class TaskTooLargeError(ValueError):
    """A request with more images than ``max_batch_size`` (TF Serving: INVALID_ARGUMENT)."""


class QueueFullError(RuntimeError):
    """``max_enqueued_batches`` are waiting already (TF Serving: UNAVAILABLE)."""


def pad(images: list, parameters: BatchingParameters, filler) -> list:
    """``images`` (or explain rows) padded with ``filler`` to the batch size TF Serving would run
    them at."""
    return images + [filler] * (parameters.padded_size(len(images)) - len(images))


@dataclass
class _Task:
    images: list[bytes]
    future: asyncio.Future = field(repr=False)


@dataclass
class _Batch:
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    opened: float = 0.0  # when its first task joined (event loop clock)


class MicroBatcher:
    """Batches the requests given to :meth:`submit` into calls of ``run_batch``, by
    ``parameters`` (see the module docstring). ``run_batch`` runs in ``num_batch_threads``
    threads."""

    def __init__(self, run_batch: Callable[[list[bytes]], Outputs], parameters: BatchingParameters):
        if parameters.enable_large_batch_splitting:
            raise ConfigFileError(
                f"{parameters.source}: enable_large_batch_splitting is not supported by the local "
                "predictor; size max_batch_size to hold the largest request instead"
            )
        self.run_batch = run_batch
        self.parameters = parameters
        self._batches: collections.deque[_Batch] = collections.deque([_Batch()])  # tail: open
        self._changed: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(
            parameters.num_batch_threads, thread_name_prefix="batch"
        )
        self.batches = 0
        self.images = 0
        self.padding = 0

    async def start(self) -> None:
        self._changed = asyncio.Event()
        self._workers = [
            asyncio.create_task(self._work(), name=f"batch-thread-{i}")
            for i in range(self.parameters.num_batch_threads)
        ]

    async def stop(self) -> None:
        if self.batches:
            logger.info(
                "batching: %d images in %d batches (%.1f per batch), %d padding rows",
                self.images,
                self.batches,
                self.images / self.batches,
                self.padding,
            )
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: list[bytes]) -> Outputs:
        """Every output's rows for ``images``, once their batch has run."""
        limit = self.parameters.max_batch_size
        if len(images) > limit:
            raise TaskTooLargeError(
                f"a request of {len(images)} images is larger than the batch limit "
                f"(max_batch_size {limit})"
            )
        loop = asyncio.get_running_loop()
        batch = self._batches[-1]
        if batch.size + len(images) > limit:
            if len(self._batches) >= self.parameters.max_enqueued_batches:
                raise QueueFullError(
                    f"the batching queue is full ({self.parameters.max_enqueued_batches} batches "
                    "waiting, max_enqueued_batches)"
                )
            batch = _Batch()
            self._batches.append(batch)
        if not batch.tasks:
            batch.opened = loop.time()
        task = _Task(images, loop.create_future())
        batch.tasks.append(task)
        batch.size += len(images)
        self._changed.set()
        return await task.future

    async def _next_batch(self) -> _Batch:
        loop = asyncio.get_running_loop()
        while True:
            wait = None
            if len(self._batches) > 1:  # a closed batch: the oldest goes first
                return self._batches.popleft()
            batch = self._batches[0]
            if batch.tasks:
                wait = batch.opened + self.parameters.batch_timeout - loop.time()
                if batch.size >= self.parameters.max_batch_size or wait <= 0:
                    self._batches[0] = _Batch()
                    return batch
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def _work(self) -> None:
        while True:
            await self._run(await self._next_batch())

    async def _run(self, batch: _Batch) -> None:
        tasks = [t for t in batch.tasks if not t.future.done()]  # clients that went away
        images = [image for task in tasks for image in task.images]
        if not images:
            return
        padded = pad(images, self.parameters, tasks[-1].images[0])
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.run_batch, padded)
        except Exception as exc:  # one graph call: every request in it fails
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(exc)
            return
        self.batches += 1
        self.images += len(images)
        self.padding += len(padded) - len(images)
        offset = 0
        for task in tasks:
            n = len(task.images)
            if not task.future.done():
                task.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
            offset += n
