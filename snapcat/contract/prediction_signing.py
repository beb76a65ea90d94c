"""Signed ``prediction_id``: proof that an answer came from the transformer (issue 25).

The seller-feedback loop turns answers into the next training set, so only answers the product
really gave may be labelled. The transformer signs every ``prediction_id`` with HMAC-SHA256; the
feedback sink (:mod:`snapcat.feedback.sink`) stores a logged response only when each of its ids
verifies, and labels only stored ones. Crosses a process boundary (transformer -> logger -> sink
-> app backend), hence :mod:`snapcat.contract`; no TensorFlow.

An id is ``<key id>.<nonce: 32 hex>.<MAC: 32 hex>`` (URL-path safe, about 70 characters). The MAC
(HMAC-SHA256, first 128 bits) covers the nonce *and* what the answer said: the model version, the
suggested slugs in order and the ``confident`` flag. So a logged response cannot be replayed
under another model version (forty fake versions cannot take the 32 metric labels) nor with other
suggestions (agreement counts stay honest).

Keys come from a folder (a mounted Kubernetes Secret) named by ``SNAPCAT_PREDICTION_KEYS``:

- ``current``: ``<key id>:<secret, at least 64 hex digits>``: signs, and verifies;
- ``previous`` (optional): ``<key id>:<secret>[:<unix time>]``: verifies only, until that time
  when one is given. Rotation without downtime: move ``current`` to ``previous`` (with an expiry,
  e.g. a week later), write a new ``current``; kubelet refreshes the mounted files and
  :class:`KeyRing` re-reads them when they change (checked at most every ``RELOAD_SECONDS``).

``SNAPCAT_PREDICTION_KEYS`` may also name a single file (the ``current`` key alone).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KEYS_ENV = "SNAPCAT_PREDICTION_KEYS"
CURRENT, PREVIOUS = "current", "previous"
RELOAD_SECONDS = 10.0
MIN_SECRET_BYTES = 32
_MAC_HEX = 32  # 128 bits of HMAC-SHA256
KEY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
#: A signed prediction id (also what the sink's routes accept as one).
SIGNED_ID = re.compile(r"^([a-z0-9][a-z0-9-]{0,15})\.([0-9a-f]{32})\.([0-9a-f]{32})$")


class KeyMaterialError(ValueError):
    """The key material is missing or malformed (the message says which file and why)."""


@dataclass(frozen=True)
class Key:
    kid: str
    secret: bytes
    not_after: float | None = None  # unix time after which it no longer verifies

    def usable(self, now: float) -> bool:
        return self.not_after is None or now <= self.not_after


def parse_key(text: str, where: str) -> Key:
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise KeyMaterialError(f"{where}: expected '<key id>:<hex secret>[:<unix expiry>]'")
    kid, secret_hex = parts[0], parts[1]
    if not KEY_ID.match(kid):
        raise KeyMaterialError(f"{where}: the key id must be 1-16 of a-z, 0-9, '-'")
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        raise KeyMaterialError(f"{where}: the secret is not hex") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyMaterialError(
            f"{where}: the secret needs at least {MIN_SECRET_BYTES * 2} hex digits"
        )
    not_after = None
    if len(parts) == 3:
        try:
            not_after = float(parts[2])
        except ValueError:
            raise KeyMaterialError(f"{where}: the expiry must be a unix time") from None
    return Key(kid, secret, not_after)


def new_key_text(kid: str = "local") -> str:
    """A fresh ``current`` file's content (what ``snapcat serve local`` and tests generate)."""
    return f"{kid}:{secrets.token_hex(MIN_SECRET_BYTES)}\n"


def write_key_folder(folder: str | os.PathLike, kid: str = "local") -> Path:
    """Writes a fresh ``current`` key into ``folder`` (mode 0600) and returns the folder."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    target = path / CURRENT
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_key_text(kid))
    return path


def _message(nonce: str, version: str, slugs: list[str], confident: bool) -> bytes:
    # Unit and record separators cannot occur in a version or a slug we emit; lengths are implicit.
    return "\x1e".join(
        ["snapcat-prediction/1", nonce, version, "\x1f".join(slugs), "1" if confident else "0"]
    ).encode("utf-8")


def _mac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:_MAC_HEX]


class KeyRing:
    """The current key (signs) and the previous one (verifies during its grace period)."""

    def __init__(self, current: Key, previous: Key | None = None, source: Path | None = None):
        self.current, self.previous = current, previous
        self.source = source
        self._stamp = self._mtimes()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: str | os.PathLike) -> KeyRing:
        path = Path(source)
        if path.is_dir():
            current_file, previous_file = path / CURRENT, path / PREVIOUS
        else:
            current_file, previous_file = path, None
        try:
            current = parse_key(current_file.read_text(), str(current_file))
        except OSError as exc:
            raise KeyMaterialError(
                f"cannot read the prediction key {current_file}: {exc}"
            ) from None
        previous = None
        if previous_file is not None and previous_file.is_file():
            text = previous_file.read_text()
            previous = parse_key(text, str(previous_file)) if text.strip() else None
        return cls(current, previous, path)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> KeyRing | None:
        """The ring named by ``SNAPCAT_PREDICTION_KEYS``; None when unset."""
        value = (environ if environ is not None else os.environ).get(KEYS_ENV, "").strip()
        return cls.load(value) if value else None

    @classmethod
    def ephemeral(cls) -> KeyRing:
        """A random key nobody else knows: ids signed with it verify nowhere else."""
        return cls(parse_key(new_key_text("ephemeral"), "ephemeral"))

    def _mtimes(self) -> tuple:
        if self.source is None:
            return ()
        names = [CURRENT, PREVIOUS] if self.source.is_dir() else [""]
        stamps = []
        for name in names:
            try:
                stat = (self.source / name if name else self.source).stat()
                stamps.append((name, stat.st_mtime_ns, stat.st_ino))
            except OSError:
                stamps.append((name, None, None))
        return tuple(stamps)

    def refresh(self, force: bool = False) -> None:
        """Re-reads the files when they changed (kubelet swaps a Secret's files on rotation); a
        half-written or broken rotation keeps the keys in use."""
        if self.source is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            stamp = self._mtimes()
            if stamp == self._stamp:
                return
            try:
                fresh = KeyRing.load(self.source)
            except (KeyMaterialError, OSError):
                return
            self.current, self.previous, self._stamp = fresh.current, fresh.previous, stamp

    # ------------------------------------------------------------------ sign / verify
    def sign(self, version: str, slugs: list[str], confident: bool) -> str:
        self.refresh()
        key = self.current
        nonce = secrets.token_hex(16)
        return f"{key.kid}.{nonce}.{_mac(key.secret, _message(nonce, version, slugs, confident))}"

    def key_for(self, kid: str, now: float | None = None) -> Key | None:
        """The key with id ``kid`` that may still verify, or None."""
        self.refresh()
        now = time.time() if now is None else now
        for key in (self.current, self.previous):
            if key is not None and key.kid == kid and key.usable(now):
                return key
        return None

    def verify(self, token: str, version: str, slugs: list[str], confident: bool) -> bool:
        """Whether ``token`` was signed by an accepted key for exactly this answer."""
        match = SIGNED_ID.match(token) if isinstance(token, str) else None
        if match is None:
            return False
        kid, nonce, mac = match.groups()
        key = self.key_for(kid)
        if key is None:
            return False
        return hmac.compare_digest(
            mac, _mac(key.secret, _message(nonce, version, slugs, confident))
        )
