"""The local predictor's batching follows TF Serving's parameters and scheduler semantics
(snapcat.local.batching): batch size limit, batch timeout, padding to allowed sizes, a bounded
queue that refuses at once, parallel batch threads. No TensorFlow: run_batch is a fake model."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from snapcat.contract.tf_serving_config import BatchingParameters, ConfigFileError
from snapcat.local.batching import MicroBatcher, QueueFullError, TaskTooLargeError


def params(**fields) -> BatchingParameters:
    return BatchingParameters(**{"num_batch_threads": 1, **fields})


class FakeModel:
    """Answers each image with its length; records every batch it ran."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.batches: list[list[bytes]] = []
        self.delay = delay
        self.gate = gate
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, images: list[bytes]) -> dict[str, np.ndarray]:
        with self._lock:
            self.batches.append(list(images))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                assert self.gate.wait(10)
            time.sleep(self.delay)
            if b"bad" in images:
                raise ValueError("undecodable input")
            return {"length": np.array([float(len(i)) for i in images], np.float32)}
        finally:
            with self._lock:
                self.running -= 1


def run(scenario, model: FakeModel, parameters: BatchingParameters, guard: float = 30.0):
    """Runs ``scenario`` against a started batcher; ``guard`` seconds at most (a hang, or a wait
    the scenario says must not happen, fails with TimeoutError instead of blocking the suite)."""

    async def main():
        batcher = MicroBatcher(model, parameters)
        await batcher.start()
        try:
            return await asyncio.wait_for(scenario(batcher), guard)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def lengths(result) -> list[float]:
    return result["length"].tolist()


def test_batches_respect_max_batch_size_and_keep_requests_whole():
    model = FakeModel()

    async def scenario(batcher):
        many = await asyncio.gather(*(batcher.submit([b"x" * n]) for n in range(1, 7)))
        # 3 + 2 images: the second does not fit the open batch of 4, so it starts the next one
        split = await asyncio.gather(batcher.submit([b"a"] * 3), batcher.submit([b"bb"] * 2))
        with pytest.raises(TaskTooLargeError, match="5 images is larger than .*max_batch_size 4"):
            await batcher.submit([b"c"] * 5)
        return many, split

    many, split = run(scenario, model, params(max_batch_size=4, batch_timeout_micros=20_000))
    assert [lengths(r) for r in many] == [[n] for n in range(1, 7)]
    assert [lengths(r) for r in split] == [[1.0] * 3, [2.0] * 2]
    assert [len(b) for b in model.batches] == [4, 2, 3, 2]
    assert all(len(b) <= 4 for b in model.batches)


def test_an_underfull_batch_waits_for_the_timeout_and_no_longer():
    model = FakeModel()

    async def scenario(batcher):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit([b"lone"])
        return loop.time() - start

    waited = run(scenario, model, params(max_batch_size=8, batch_timeout_micros=150_000))
    assert waited >= 0.14  # the open batch waited for its timeout (never cut short)
    assert [len(b) for b in model.batches] == [1]  # and then ran (a hang fails run()'s guard)
    model = FakeModel()
    run(scenario, model, params(max_batch_size=8, batch_timeout_micros=0))
    assert [len(b) for b in model.batches] == [1]  # timeout 0: the lone request ran by itself


def test_a_full_batch_does_not_wait_for_the_timeout():
    model = FakeModel()

    async def scenario(batcher):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(batcher.submit([b"x"]) for _ in range(4)))
        return loop.time() - start

    # A full batch that waited for its 5 s timeout would trip run()'s 2.5 s guard.
    run(scenario, model, params(max_batch_size=4, batch_timeout_micros=5_000_000), guard=2.5)
    assert [len(b) for b in model.batches] == [4]


def test_batches_are_padded_to_allowed_sizes_with_a_row_of_the_last_request():
    model = FakeModel()

    async def scenario(batcher):
        return await asyncio.gather(batcher.submit([b"a"]), batcher.submit([b"bb", b"ccc"]))

    first, second = run(
        scenario,
        model,
        params(max_batch_size=8, batch_timeout_micros=50_000, allowed_batch_sizes=(1, 4, 8)),
    )
    assert model.batches == [[b"a", b"bb", b"ccc", b"bb"]]  # 3 padded to 4
    assert lengths(first) == [1.0] and lengths(second) == [2.0, 3.0]  # padding dropped


def test_a_full_queue_refuses_at_once():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def scenario(batcher):
        running = asyncio.ensure_future(batcher.submit([b"1"]))  # taken by the only thread
        while not model.batches:
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(batcher.submit([b"2"])) for _ in range(4)]  # 2 batches
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        with pytest.raises(QueueFullError, match="max_enqueued_batches"):
            await batcher.submit([b"3"])
        refused_in = time.perf_counter() - start
        gate.set()
        answers = await asyncio.gather(running, *queued)
        return refused_in, answers

    refused_in, answers = run(
        scenario,
        model,
        params(max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=2),
    )
    assert refused_in < 0.05
    assert len(answers) == 5 and [len(b) for b in model.batches] == [1, 2, 2]


@pytest.mark.parametrize("threads", [1, 2])
def test_num_batch_threads_batches_run_at_once(threads):
    model = FakeModel(delay=0.1)

    async def scenario(batcher):
        await asyncio.gather(*(batcher.submit([b"x"] * 2) for _ in range(4)))

    run(scenario, model, params(max_batch_size=2, num_batch_threads=threads))
    assert model.most_running == threads


def test_a_failing_batch_fails_every_request_in_it():
    """As in TF Serving: a batch is one graph call."""
    model = FakeModel()

    async def scenario(batcher):
        return await asyncio.gather(
            batcher.submit([b"ok"]), batcher.submit([b"bad"]), return_exceptions=True
        )

    results = run(scenario, model, params(max_batch_size=4, batch_timeout_micros=50_000))
    assert all(isinstance(r, ValueError) for r in results)
    assert model.batches == [[b"ok", b"bad"]]


def test_large_batch_splitting_is_refused():
    with pytest.raises(ConfigFileError, match="enable_large_batch_splitting"):
        MicroBatcher(FakeModel(), params(enable_large_batch_splitting=True))
