"""A kfp.local run leaves ``print`` and the root logger as it found them, whatever its threads'
context managers restored last (pipelines/local_run_guard.py)."""

from __future__ import annotations

import builtins
import logging
import threading
import warnings

from kfp.local import logging_utils

from pipelines.local_run_guard import kfp_local_leaves_no_trace, kfp_local_notices_ignored


def test_interleaved_kfp_contexts_leave_nothing_behind():
    root = logging.getLogger()
    print_before, handlers_before, level_before = builtins.print, root.handlers[:], root.level
    entered, started, release = threading.Barrier(2), threading.Event(), threading.Event()

    def step(first: bool):
        # Both enter, then the first leaves first (restoring the original) and the second
        # after it, restoring what the first had swapped in: kfp's own context managers, as
        # ParallelFor's threads run them.
        if not first:
            started.wait(timeout=10)
        with logging_utils.indented_print(), logging_utils.local_logger_context():
            if first:
                started.set()
            entered.wait()
            if not first:
                release.wait(timeout=10)
        if first:
            release.set()

    with kfp_local_leaves_no_trace():
        threads = [threading.Thread(target=step, args=(i == 0,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        leaked = builtins.print is not print_before or root.handlers != handlers_before
    assert leaked, "kfp.local no longer leaks here: the guard may be unneeded (keep it harmless)"
    assert builtins.print is print_before
    assert root.handlers == handlers_before and root.level == level_before


def test_kfp_local_notices_are_ignored_and_nothing_else():
    """kfp.local's two notices (kfp 2.17's wording) are dropped inside
    the context, from any thread; another warning still reaches the caller."""
    notices = [
        "Task 'train': settings ['cpu_limit', 'accelerator'] have no effect in the current "
        "local runner and will be ignored.",
        'You may be attemping to run a task that uses custom or non-Python base image "x" in a '
        "Python environment.",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with kfp_local_notices_ignored():
            worker = threading.Thread(
                target=lambda: [warnings.warn(m, stacklevel=2) for m in notices]
            )
            worker.start()
            worker.join()
            warnings.warn("something the user should see", stacklevel=2)
    assert [str(w.message) for w in caught] == ["something the user should see"]
