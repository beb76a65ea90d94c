"""The feedback sink's durable storage: one SQLite database and a content-addressed photo folder.

Why SQLite: one file on the sink's volume, transactions (a record is all written or not at all),
``synchronous=FULL`` so an acknowledged write survives a crash or power loss, and no server to run.
The sink runs as one replica (a ReadWriteOnce volume); SQLite serialises its writers.

Photos are files named by their SHA-256 (the same photo sent twice is stored once), written to a
temporary name, flushed to disk and renamed into place: a reader never sees half a photo. A photo is
written before the row that names it, so every row's photo exists.

Everything is idempotent: KServe's logger, the app backend and the client may send the same thing
twice (retries), and a second copy changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    event_id TEXT NOT NULL, idx INTEGER NOT NULL, sha256 TEXT NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (event_id, idx));
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, idx INTEGER NOT NULL,
    model_version TEXT NOT NULL, top TEXT NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS confident_predictions (prediction_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY, category TEXT NOT NULL, first_reported REAL NOT NULL,
    last_reported REAL NOT NULL);
"""


@dataclass(frozen=True)
class Verdict:
    """How a seller's final category compares with what the model suggested."""

    prediction_id: str
    category: str
    model_version: str
    top1: bool
    top3: bool
    new: bool  # first report for this prediction (a retry or a correction is not new)
    confident: bool = False  # the answer was flagged confident


@dataclass(frozen=True)
class Labelled:
    """One prediction with the seller's final category, joined with its photo (None if lost)."""

    prediction_id: str
    model_version: str
    suggested: list[str]
    category: str
    photo: Path | None


class UnknownPrediction(KeyError):
    pass


def _extension(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data[4:8] == b"ftyp":
        return ".heic"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


class FeedbackStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.photos_dir = self.root / "photos"
        self.photos_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "feedback.sqlite3", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ photos
    def photo_path(self, sha256: str) -> Path | None:
        matches = list((self.photos_dir / sha256[:2]).glob(f"{sha256}.*"))
        return matches[0] if matches else None

    def _write_photo(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if self.photo_path(sha) is not None:
            return sha
        folder = self.photos_dir / sha[:2]
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, folder / f"{sha}{_extension(data)}")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        return sha

    # ------------------------------------------------------------------ writes
    def add_request(self, event_id: str, photos: list[bytes]) -> None:
        """The photos of one logged request (KServe logger's ``inference.request`` event)."""
        shas = [self._write_photo(p) for p in photos]
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO photos VALUES (?, ?, ?, ?)",
                [(event_id, i, sha, now) for i, sha in enumerate(shas)],
            )

    def add_response(self, event_id: str, predictions: list[tuple[str, str, list[str]]]) -> None:
        """(prediction_id, model_version, suggested slugs best first) of one logged response."""
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (pid, event_id, i, version, json.dumps(top), now)
                    for i, (pid, version, top) in enumerate(predictions)
                ],
            )

    def add_confident(self, prediction_ids: set[str]) -> None:
        """The predictions of a logged response that were flagged ``confident``."""
        if not prediction_ids:
            return
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO confident_predictions VALUES (?)",
                [(pid,) for pid in sorted(prediction_ids)],
            )

    def report(self, prediction_id: str, category: str) -> Verdict:
        """Records the seller's final category; a later report for the same prediction replaces
        it (the seller changed their mind), a repeated one changes nothing."""
        now = time.time()
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT model_version, top FROM predictions WHERE prediction_id = ?",
                (prediction_id,),
            ).fetchone()
            if row is None:
                raise UnknownPrediction(prediction_id)
            new = self._db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?) ON CONFLICT (prediction_id) DO UPDATE "
                "SET category = excluded.category, last_reported = excluded.last_reported "
                "RETURNING first_reported = last_reported",
                (prediction_id, category, now, now),
            ).fetchone()[0]
            confident = self._db.execute(
                "SELECT 1 FROM confident_predictions WHERE prediction_id = ?", (prediction_id,)
            ).fetchone()
        version, top = row[0], json.loads(row[1])
        return Verdict(prediction_id, category, version, top[:1] == [category],
                       category in top[:3], bool(new), confident is not None)  # fmt: skip

    # ------------------------------------------------------------------ reads
    def labelled(self) -> Iterator[Labelled]:
        """Every prediction with a final category, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.prediction_id, p.model_version, p.top, f.category, ph.sha256 "
                "FROM feedback f JOIN predictions p USING (prediction_id) "
                "LEFT JOIN photos ph ON ph.event_id = p.event_id AND ph.idx = p.idx "
                "ORDER BY f.first_reported, p.prediction_id"
            ).fetchall()
        for pid, version, top, category, sha in rows:
            photo = self.photo_path(sha) if sha else None
            yield Labelled(pid, version, json.loads(top), category, photo)
