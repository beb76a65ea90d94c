"""The local servers' logs on a terminal, the way an operator wants them: everything goes to the
log files, and only warnings and errors reach the screen (``-v``: every line), so the ready
banner is not buried under start-up chatter and one line per request."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

#: A line worth an operator's attention: Python's WARNING/ERROR/CRITICAL records in any of the
#: formats the servers use, TensorFlow's W/E/F lines, and tracebacks.
_NOTEWORTHY = re.compile(
    r"\b(WARNING|WARN|ERROR|CRITICAL|FATAL)\b|^[WEF]\d{4} |Traceback \(most recent call last\)"
    r"|^\s+File \"|^\w*(Error|Exception):"
)


def noteworthy(line: str) -> bool:
    return bool(_NOTEWORTHY.search(line))


class LogEcho:
    """Follows log files from their current end and echoes lines to ``out``: the noteworthy
    ones, or all of them when ``verbose``. A daemon thread; :meth:`stop` ends it."""

    def __init__(self, paths: list[Path], *, verbose: bool = False, out=None, poll: float = 0.2):
        self.paths = paths
        self.verbose = verbose
        self.out = out or sys.stderr
        self.poll = poll
        self._stop = threading.Event()
        self._offsets = {p: (p.stat().st_size if p.exists() else 0) for p in paths}
        self._thread = threading.Thread(target=self._run, name="log-echo", daemon=True)

    def start(self) -> LogEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._drain()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain()
            time.sleep(self.poll)

    def _drain(self) -> None:
        for path in self.paths:
            if not path.exists():
                continue
            with open(path, "rb") as handle:
                handle.seek(self._offsets[path])
                data = handle.read()
            complete = data.rfind(b"\n") + 1  # a line still being written waits for its end
            self._offsets[path] += complete
            for raw in data[:complete].splitlines():
                line = raw.decode("utf-8", "replace")
                if self.verbose or noteworthy(line):
                    print(f"[{path.stem}] {line}", file=self.out, flush=True)
