"""``snapcat feedback collect``: the sellers' final categories as training data for ``prepare``.

Writes ``OUTPUT/manifest.csv`` (``path,category`` plus where each row came from), the photos it
names under ``OUTPUT/photos/`` and ``OUTPUT/agreement.json`` (per model version: how often sellers
kept the top-1 / a top-3 suggestion). One row per distinct photo: a photo suggested several times
keeps its latest final category. Categories that are not trainable ("buying", "other") and
predictions whose photo was never logged are counted, not written.

**Corrections policy**: the sink keeps the first category given for a prediction and records a
different later one as a correction (:mod:`snapcat.feedback.store`). ``collect`` writes the first
and counts the corrections; ``use_corrections`` (``--use-corrections``) takes the latest
correction instead, for a deployment whose backend lets sellers fix a category.

**The store is read as hostile** (issue 25: whoever got write access to the volume must not get
files from elsewhere into training, nor stop or fill the run): the database is opened read-only;
a photo is named only by a validated SHA-256 digest, opened without following symlinks
(``O_NOFOLLOW``, also for its folder), taken only if it is a regular file under the size cap, and
copied only if its bytes hash to its name. A bad row, a bad photo or an unreadable database is
skipped and reported (:class:`CollectSummary.problems`), never fatal to the rest. Staging is a
temporary folder removed on every exit. CSV cells that a spreadsheet would run as a formula
(``= + - @``, tab, CR) are written with a leading ``'``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from snapcat.contract.taxonomy import Taxonomy
from snapcat.feedback.store import SHA256

MANIFEST = "manifest.csv"
AGREEMENT = "agreement.json"
#: A photo bigger than this is skipped (the sink keeps photos of at most 30 MiB: ImageSpec).
MAX_PHOTO_BYTES = 32 * 1024 * 1024
#: Problems listed by name in the summary; the rest are counted.
SHOWN_PROBLEMS = 10
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_EXTENSIONS = (".jpg", ".png", ".heic", ".webp", ".img")


class StoreUnreadable(Exception):
    """The database cannot be read at all (the message says why)."""


@dataclass
class CollectSummary:
    rows: int = 0
    labelled: int = 0
    duplicates: int = 0
    not_trainable: int = 0
    without_photo: int = 0
    corrections: int = 0
    corrections_used: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows or photos
    problems: list[str] = field(default_factory=list)  # the first SHOWN_PROBLEMS, with detail
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)

    def problem(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(f"{reason}: {detail}")

    def text(self) -> str:
        lines = [
            f"{self.rows} photos with sellers' categories ({self.labelled} answers; "
            f"{self.duplicates} repeated photos, {self.not_trainable} not trainable, "
            f"{self.without_photo} without a logged photo)"
        ]
        if self.corrections:
            lines.append(
                f"  {self.corrections} later corrections recorded, {self.corrections_used} used"
            )
        if self.skipped:
            listed = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            lines.append(f"  skipped: {listed}")
            lines.extend(f"    {p}" for p in self.problems)
        for version, a in sorted(self.agreement.items()):
            lines.append(
                f"  model version {version}: {a['answers']:.0f} answers, top-1 agreement "
                f"{a['top1_rate']:.1%}, top-3 agreement {a['top3_rate']:.1%}"
            )
        return "\n".join(lines)


def neutralise(cell: str) -> str:
    """A CSV cell a spreadsheet shows as text, not runs as a formula (OWASP CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _open_database(store: Path) -> sqlite3.Connection:
    path = store / "feedback.sqlite3"
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise StoreUnreadable(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreUnreadable(f"{path} is not a regular file")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StoreUnreadable(f"{path} is not a readable feedback database: {exc}") from None
    return db


def _rows(db: sqlite3.Connection, summary: CollectSummary, use_corrections: bool):
    """(prediction_id, version, suggested, category, sha256) per labelled prediction; bad rows
    are reported and skipped. The corrections table may be absent (stores before issue 25)."""
    corrections: dict[str, str] = {}
    try:
        for pid, category in db.execute(
            "SELECT prediction_id, category FROM corrections ORDER BY reported"
        ):
            corrections[pid] = category  # the latest wins
    except sqlite3.Error:
        pass
    summary.corrections = len(corrections)
    try:
        cursor = db.execute(
            "SELECT p.prediction_id, p.model_version, p.top, f.category, ph.sha256 "
            "FROM feedback f JOIN predictions p USING (prediction_id) "
            "LEFT JOIN photos ph ON ph.event_id = p.event_id AND ph.idx = p.idx "
            "ORDER BY f.first_reported, p.prediction_id"
        )
        for number, row in enumerate(cursor, 1):
            pid, version, top, category, sha = row
            try:
                suggested = json.loads(top)
                if not isinstance(suggested, list) or not all(
                    isinstance(s, str) for s in suggested
                ):
                    raise ValueError("not a list of slugs")
                if not all(isinstance(v, str) for v in (pid, version, category)):
                    raise ValueError("a text column holds another type")
            except (ValueError, TypeError) as exc:
                summary.problem("bad-row", f"row {number}: {str(exc)[:80]}")
                continue
            if use_corrections and pid in corrections:
                category = corrections[pid]
                summary.corrections_used += 1
            yield pid, version, suggested, category, sha
    except sqlite3.Error as exc:
        summary.problem("database-error", f"reading stopped: {str(exc)[:120]}")


def _open_photo(store: Path, sha: str, summary: CollectSummary) -> tuple[int, str] | None:
    """A file descriptor of the stored photo named by ``sha`` and its suffix (one of the store's
    own), or None (reported)."""
    if not isinstance(sha, str) or not SHA256.match(sha):
        summary.problem("bad-digest", repr(sha)[:80])
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        photos = os.open(store / "photos", flags | os.O_DIRECTORY)
    except OSError as exc:
        summary.problem("photos-folder", exc.strerror or str(exc))
        return None
    try:
        try:
            folder = os.open(sha[:2], flags | os.O_DIRECTORY, dir_fd=photos)
        except OSError:
            summary.problem("missing-photo", sha)
            return None
        try:
            for ext in _EXTENSIONS:
                try:
                    fd = os.open(sha + ext, flags, dir_fd=folder)
                except FileNotFoundError:
                    continue
                except OSError as exc:  # ELOOP: a symlink
                    summary.problem("not-a-regular-file", f"{sha}{ext}: {exc.strerror}")
                    return None
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    os.close(fd)
                    summary.problem("not-a-regular-file", f"{sha}{ext}")
                    return None
                if info.st_size > MAX_PHOTO_BYTES:
                    os.close(fd)
                    summary.problem("too-large", f"{sha}{ext}: {info.st_size} bytes")
                    return None
                os.set_blocking(fd, True)
                return fd, ext
            summary.problem("missing-photo", sha)
            return None
        finally:
            os.close(folder)
    finally:
        os.close(photos)


def _copy_photo(fd: int, sha: str, target: Path, summary: CollectSummary) -> bool:
    """Copies at most ``MAX_PHOTO_BYTES`` (the file may grow while read) and keeps the copy only
    if its bytes hash to ``sha``: a swapped file is not trained on."""
    digest = hashlib.sha256()
    copied = 0
    with os.fdopen(fd, "rb") as source, open(target, "xb") as out:
        while chunk := source.read(1 << 20):
            copied += len(chunk)
            if copied > MAX_PHOTO_BYTES:
                break
            digest.update(chunk)
            out.write(chunk)
    if copied > MAX_PHOTO_BYTES or digest.hexdigest() != sha:
        target.unlink()
        summary.problem("digest-mismatch" if copied <= MAX_PHOTO_BYTES else "too-large", sha)
        return False
    return True


def collect(store_dir: str, output: str, *, taxonomy: Taxonomy | None = None,
            overwrite: bool = False, use_corrections: bool = False) -> CollectSummary:  # fmt: skip
    taxonomy = taxonomy or Taxonomy.load()
    trainable = set(taxonomy.trainable_slugs)
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it")
    store = Path(store_dir)
    summary = CollectSummary()
    latest: dict[str, tuple[str, str, str]] = {}  # sha256 -> (category, prediction_id, version)
    counts: dict[str, list[int]] = {}
    db = _open_database(store)
    try:
        for pid, version, suggested, category, sha in _rows(db, summary, use_corrections):
            summary.labelled += 1
            tally = counts.setdefault(version, [0, 0, 0])
            tally[0] += 1
            tally[1] += suggested[:1] == [category]
            tally[2] += category in suggested[:3]
            if category not in trainable:
                summary.not_trainable += 1
            elif sha is None:
                summary.without_photo += 1
            else:
                summary.duplicates += sha in latest
                latest[sha] = (category, pid, version)
    finally:
        db.close()
    summary.agreement = {
        v: {"answers": n, "top1": t1, "top3": t3, "top1_rate": t1 / n, "top3_rate": t3 / n}
        for v, (n, t1, t3) in counts.items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (staging / "photos").mkdir()
        with open(staging / MANIFEST, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "category", "prediction_id", "model_version"])
            for sha, (category, pid, version) in latest.items():
                opened = _open_photo(store, sha, summary)
                if opened is None:
                    continue
                fd, ext = opened
                name = f"{sha}{ext}"
                if not _copy_photo(fd, sha, staging / "photos" / name, summary):
                    continue
                writer.writerow([neutralise(c) for c in (f"photos/{name}", category, pid, version)])
                summary.rows += 1
        (staging / AGREEMENT).write_text(json.dumps(summary.agreement, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when renamed into place
    return summary
