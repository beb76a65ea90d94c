"""The batch prediction output: one JSON object per line, appended batch by batch, resumable.

A run killed mid-write leaves at most one partial last line: :func:`resume` cuts it off (that
photo is predicted again) and returns the ids already answered, so a rerun with the same output
skips them. Lines are flushed and fsync'ed after each batch, so what :func:`resume` reads is what
the run had finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete line of a results file (a partial last line is skipped)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            if line.strip():
                yield json.loads(line)


def resume(path: str | Path) -> set[str]:
    """The ids already in ``path`` (none if it does not exist), after cutting off a partial last
    line left by a killed run."""
    path = Path(path)
    if not path.exists():
        return set()
    with open(path, "rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            handle.truncate(end)
    done = set()
    for line in data[:end].splitlines():
        if line.strip():
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError):
                continue  # a line not ours: left as it is, never counted as done
    return done


class ResultWriter:
    """Appends lines to the output; :meth:`flush` makes a batch durable."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, line: dict[str, Any]) -> None:
        self._handle.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self.flush()
        self._handle.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
