"""A kfp.local run leaves ``print`` and the root logger as it found them, whatever its threads'
context managers restored last (pipelines/local_run_guard.py)."""

from __future__ import annotations

import builtins
import logging
import threading

from kfp.local import logging_utils

from pipelines.local_run_guard import kfp_local_leaves_no_trace


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
