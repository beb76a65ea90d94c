"""What a ``kfp.local`` run must leave of this process as it found it.

kfp.local (2.17) indents its steps' output by swapping ``builtins.print`` and sends its own log
lines to ``sys.stdout`` by swapping the root logger's handlers, each in a context manager that
restores what it saw on entry. A pipeline whose steps run in parallel (``dsl.ParallelFor``, the
training pipeline's candidates) enters those contexts from several threads; their exits
interleave, and the last restore can leave an indenting ``print`` (every later line of the
process indented: a dry run's YAML no longer parsed) or a handler on a stream that has since
closed ("--- Logging error ---" on every later log line). :func:`kfp_local_leaves_no_trace`
puts both back whatever the threads did, and :func:`kfp_local_notices_ignored` keeps kfp.local's
notices that tell a local run nothing out of its output.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def kfp_local_leaves_no_trace() -> Iterator[None]:
    root = logging.getLogger()
    print_before, handlers_before, level_before = builtins.print, root.handlers[:], root.level
    try:
        yield
    finally:
        builtins.print = print_before
        root.handlers[:] = handlers_before
        root.setLevel(level_before)


#: kfp.local's warnings that say nothing to a local run's user: our images have Python and kfp
#: (kfp looks for "python" in the image's name), and a local run ignores each step's Kubernetes
#: settings (resources, GPUs, display names), which is what running locally means.
KFP_LOCAL_NOTICES = (
    ".*custom or non-Python base image.*",
    ".*have no effect in the current local runner.*",
)


@contextlib.contextmanager
def kfp_local_notices_ignored() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in KFP_LOCAL_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        yield
