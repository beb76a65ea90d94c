"""The feedback sink's durable storage: one SQLite database and a content-addressed photo folder.

Why SQLite: one file on the sink's volume, transactions (a record is all written or not at all),
``synchronous=FULL`` so an acknowledged write survives a crash or power loss, and no server to run.
The sink runs as one replica (a ReadWriteOnce volume); SQLite serialises its writers.

Photos are files named by their SHA-256 (the same photo sent twice is stored once), written to a
temporary name, flushed to disk and renamed into place: a reader never sees half a photo. A photo is
written before the row that names it, so every row's photo exists.

Everything is idempotent: KServe's logger, the app backend and the client may send the same thing
twice (retries), and a second copy changes nothing.

A seller's category, once given, is kept: a different one later is recorded in ``corrections``
with its time (``snapcat feedback collect`` keeps the first unless told otherwise), so a second
caller cannot silently overwrite a real label.

Bounded (issue 25): only decodable image headers are kept as photos
(:func:`snapcat.imaging.normalize.open_image`), the photos' bytes have a total quota and each model
version a quota of predictions; past either, or when the volume itself is full (``ENOSPC``,
``EDQUOT``, SQLite's "disk is full"), writes raise :class:`StoreFull` and nothing already stored
is touched: a photo is written to a temporary name and renamed only once complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
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
CREATE TABLE IF NOT EXISTS corrections (
    prediction_id TEXT NOT NULL, category TEXT NOT NULL, reported REAL NOT NULL,
    PRIMARY KEY (prediction_id, category));
CREATE TABLE IF NOT EXISTS photo_files (sha256 TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
"""

SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Photos' bytes kept at most (the volume's size less room for the database).
DEFAULT_MAX_PHOTO_BYTES = 8 * 1024**3
#: Predictions kept per model version (a canary's worth of weeks of traffic).
DEFAULT_MAX_PREDICTIONS_PER_VERSION = 2_000_000
#: Below this much free space on the volume the store counts as full.
DEFAULT_MIN_FREE_BYTES = 256 * 1024**2
#: Seconds readiness fails after a photo was refused for room.
FULL_HOLD_SECONDS = 60.0


class StoreFull(Exception):
    """A quota is reached or the volume is full; the message says which (HTTP 507)."""


class NotAnImage(ValueError):
    """A logged "photo" whose header is not an image's (HTTP 400)."""


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


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
    correction: str | None = None  # a different later category: recorded, the first one kept


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


def check_image(data: bytes) -> None:
    """Raises :class:`NotAnImage` unless ``data``'s header is a supported image's within the
    default caps (the serving checks; nothing is decoded)."""
    from snapcat.contract.image_spec import ImageSpec
    from snapcat.imaging.normalize import ImageError, open_image

    try:
        open_image(data, ImageSpec()).close()
    except ImageError as exc:
        raise NotAnImage(str(exc)) from None


class FeedbackStore:
    def __init__(
        self,
        root: str | os.PathLike,
        *,
        max_photo_bytes: int = DEFAULT_MAX_PHOTO_BYTES,
        max_predictions_per_version: int = DEFAULT_MAX_PREDICTIONS_PER_VERSION,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ):
        self.root = Path(root)
        self.photos_dir = self.root / "photos"
        self.photos_dir.mkdir(parents=True, exist_ok=True)
        self.max_photo_bytes = max_photo_bytes
        self.max_predictions_per_version = max_predictions_per_version
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "feedback.sqlite3", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.photo_bytes = self._db.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM photo_files"
        ).fetchone()[0]
        self.per_version = dict(
            self._db.execute("SELECT model_version, COUNT(*) FROM predictions GROUP BY 1")
        )
        self._full: tuple[str, float] | None = None  # (why, until when): a refused photo write

    # ------------------------------------------------------------------ capacity
    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def fullness(self) -> str | None:
        """Why the store takes no more photos now (None: it does). Readiness fails while set."""
        if self.photo_bytes >= self.max_photo_bytes:
            return f"the photo quota ({self.max_photo_bytes} bytes) is reached"
        if self.free_bytes() < self.min_free_bytes:
            return f"the volume has under {self.min_free_bytes} bytes free"
        if self._full and time.monotonic() < self._full[1]:
            return self._full[0]
        return None

    def _refuse(self, reason: str) -> StoreFull:
        """Not ready for ``FULL_HOLD_SECONDS`` after a refused photo, then tried again (space may
        have been freed, or the quota raised)."""
        self._full = (reason, time.monotonic() + FULL_HOLD_SECONDS)
        return StoreFull(reason)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ photos
    def photo_path(self, sha256: str) -> Path | None:
        if not SHA256.match(sha256):
            return None
        matches = list((self.photos_dir / sha256[:2]).glob(f"{sha256}.*"))
        return matches[0] if matches else None

    def _write_photo(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if self.photo_path(sha) is not None:
            return sha
        reason = self.fullness()
        if reason or self.photo_bytes + len(data) > self.max_photo_bytes:
            raise self._refuse(
                reason or f"the photo quota ({self.max_photo_bytes} bytes) is reached"
            )
        folder = self.photos_dir / sha[:2]
        try:
            folder.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        except OSError as exc:
            if _disk_full(exc):
                raise self._refuse("the volume is full") from None
            raise
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, folder / f"{sha}{_extension(data)}")
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)  # no partial file is left behind
            if _disk_full(exc):
                raise self._refuse("the volume is full") from None
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        size = len(data)

        def count(db):
            # Counted at once (not with the event's rows): a photo kept before a later one of the
            # same event was refused still counts against the quota after a restart. Under the
            # store's lock: concurrent events add up exactly.
            if db.execute("INSERT OR IGNORE INTO photo_files VALUES (?, ?)", (sha, size)).rowcount:
                self.photo_bytes += size

        self._write(count)
        return sha

    # ------------------------------------------------------------------ writes
    def _write(self, statements) -> None:
        """Runs ``statements(db)`` in one transaction; a full disk is :class:`StoreFull` (the
        transaction is rolled back: nothing half-written)."""
        try:
            with self._lock, self._db:
                statements(self._db)
        except sqlite3.OperationalError as exc:
            if _disk_full(exc):
                raise self._refuse("the volume is full (database)") from None
            raise

    def add_request(self, event_id: str, photos: list[bytes]) -> None:
        """The photos of one logged request (KServe logger's ``inference.request`` event). Every
        photo is checked first: one that is not an image refuses the whole event."""
        for i, photo in enumerate(photos):
            try:
                check_image(photo)
            except NotAnImage as exc:
                raise NotAnImage(f"photo {i}: {exc}") from None
        shas = [self._write_photo(p) for p in photos]
        now = time.time()

        def write(db):
            db.executemany(
                "INSERT OR IGNORE INTO photos VALUES (?, ?, ?, ?)",
                [(event_id, i, sha, now) for i, sha in enumerate(shas)],
            )

        self._write(write)

    def add_response(self, event_id: str, predictions: list[tuple[str, str, list[str]]]) -> None:
        """(prediction_id, model_version, suggested slugs best first) of one logged response;
        the ids are verified by the caller (:mod:`snapcat.feedback.sink`)."""
        now = time.time()
        for version in {v for _, v, _ in predictions}:
            if self.per_version.get(version, 0) >= self.max_predictions_per_version:
                raise StoreFull(
                    f"model version {version!r} has its quota of "
                    f"{self.max_predictions_per_version} predictions"
                )
        added: dict[str, int] = {}

        def write(db):
            for i, (pid, version, top) in enumerate(predictions):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                    (pid, event_id, i, version, json.dumps(top), now),
                )
                added[version] = added.get(version, 0) + cursor.rowcount

        self._write(write)
        for version, n in added.items():
            self.per_version[version] = self.per_version.get(version, 0) + n

    def add_confident(self, prediction_ids: set[str]) -> None:
        """The predictions of a logged response that were flagged ``confident``."""
        if not prediction_ids:
            return
        self._write(
            lambda db: db.executemany(
                "INSERT OR IGNORE INTO confident_predictions VALUES (?)",
                [(pid,) for pid in sorted(prediction_ids)],
            )
        )

    def prediction(self, prediction_id: str) -> tuple[str, list[str], bool] | None:
        """(model_version, suggested slugs, confident) of a stored prediction, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT model_version, top, EXISTS (SELECT 1 FROM confident_predictions c "
                "WHERE c.prediction_id = p.prediction_id) FROM predictions p "
                "WHERE prediction_id = ?",
                (prediction_id,),
            ).fetchone()
        return None if row is None else (row[0], json.loads(row[1]), bool(row[2]))

    def report(self, prediction_id: str, category: str) -> Verdict:
        """Records the seller's final category. The first one is kept: a repeat changes nothing,
        a different one is recorded as a correction with its time (``Verdict.correction``)."""
        now = time.time()
        result: dict = {}

        def write(db):
            row = db.execute(
                "SELECT model_version, top FROM predictions WHERE prediction_id = ?",
                (prediction_id,),
            ).fetchone()
            if row is None:
                raise UnknownPrediction(prediction_id)
            kept = db.execute(
                "SELECT category FROM feedback WHERE prediction_id = ?", (prediction_id,)
            ).fetchone()
            if kept is None:
                db.execute(
                    "INSERT INTO feedback VALUES (?, ?, ?, ?)", (prediction_id, category, now, now)
                )
            else:
                db.execute(
                    "UPDATE feedback SET last_reported = ? WHERE prediction_id = ?",
                    (now, prediction_id),
                )
                if kept[0] != category:
                    db.execute(
                        "INSERT OR IGNORE INTO corrections VALUES (?, ?, ?)",
                        (prediction_id, category, now),
                    )
            confident = db.execute(
                "SELECT 1 FROM confident_predictions WHERE prediction_id = ?", (prediction_id,)
            ).fetchone()
            result.update(row=row, kept=kept, confident=confident is not None)

        self._write(write)
        version, top = result["row"][0], json.loads(result["row"][1])
        kept = result["kept"][0] if result["kept"] else category
        correction = category if kept != category else None
        return Verdict(prediction_id, kept, version, top[:1] == [kept], kept in top[:3],
                       result["kept"] is None, result["confident"], correction)  # fmt: skip
