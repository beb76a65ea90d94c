"""What a manifest row may name (issue 25): a manifest is data, often written by another system
(``snapcat feedback collect``, a labelling tool), so it must not make ``prepare`` read files or
URLs outside the input. Was: ``../``, absolute paths, ``file://``, ``zip://`` and ``http://`` rows
were all opened (a request forgery from inside the cluster), and a FIFO hung the run.

- **Roots**: the manifest's own folder or bucket prefix (or ``--input``'s), plus each
  ``--allow-root``. A row resolves to a location inside one of them or is refused.
- **Schemes**: a local path, or the scheme of a root (``gs://``, ``s3://``, ...). ``http``,
  ``zip``, ``file`` and the rest of fsspec's chained and remote protocols are refused unless a
  root has that scheme.
- **Relative paths** resolve against the manifest's folder; ``..`` may not leave the root.
- **Local files**: the real path (symlinks resolved) must stay inside the root's real path, and
  be a regular file (a FIFO or a device is refused: checked here and again when the worker opens
  it, :func:`read_local_regular`).

Each refused row gets a reason (``rejected.csv``); the good rows go on.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass

LOCAL = ""  # the scheme of a plain path


class Refused(ValueError):
    """A row names something the manifest may not: ``reason`` is its short code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def split_scheme(uri: str) -> tuple[str, str]:
    """(scheme, rest): ``gs://b/x`` -> ("gs", "b/x"); a plain path -> ("", path)."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return scheme.lower(), rest
    return LOCAL, uri


@dataclass(frozen=True)
class Root:
    scheme: str
    path: str  # normalised; local roots: the real path
    prefix: str  # what is put back in front of a path of this root ("gs://" or "")


def make_root(uri: str) -> Root:
    scheme, rest = split_scheme(uri)
    if scheme in ("", "file", "local"):
        real = os.path.realpath(rest or ".")
        return Root(LOCAL, real, "")
    return Root(scheme, posixpath.normpath(rest).rstrip("/"), f"{scheme}://")


def inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or under it (both normalized, same scheme)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


class ManifestPolicy:
    """Resolves each manifest row's path to a URI inside the allowed roots, or refuses it."""

    def __init__(self, base_uri: str, extra_roots: tuple[str, ...] | list[str] = ()):
        self.base = make_root(base_uri)
        self.roots = [self.base, *(make_root(r) for r in extra_roots)]
        self.schemes = {r.scheme for r in self.roots}

    def resolve(self, path: str) -> str:
        if "\x00" in path:
            raise Refused("nul-byte", "the path holds a NUL byte")
        scheme, rest = split_scheme(path)
        if scheme == "file":
            scheme = LOCAL
        if scheme == LOCAL and not posixpath.isabs(rest):
            # Relative: inside the manifest's own folder or bucket prefix.
            scheme, rest = self.base.scheme, posixpath.join(self.base.path, rest)
        if scheme not in self.schemes:
            shown = f"{scheme}://" if scheme else "a local path"
            raise Refused("scheme-not-allowed", f"{shown} is not allowed for this input")
        if scheme == LOCAL:
            return self._local(rest)
        normal = posixpath.normpath(rest)  # '..' that stays inside a root is harmless
        for root in self.roots:
            if root.scheme == scheme and inside(normal, root.path):
                return f"{scheme}://{normal}"
        raise Refused("outside-input", "the path is outside the input and every --allow-root")

    def _local(self, path: str) -> str:
        lexical = posixpath.normpath(path)
        real = os.path.realpath(lexical)
        roots = [r.path for r in self.roots if r.scheme == LOCAL]
        if not any(inside(lexical, r) or inside(real, r) for r in roots):
            raise Refused("outside-input", "the path is outside the input and every --allow-root")
        if not any(inside(real, r) for r in roots):
            raise Refused("outside-input", "a symlink leads outside the input")
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            return real  # the worker reports it missing, as for any input
        except OSError as exc:
            raise Refused("unreadable", exc.strerror or str(exc)) from None
        if not stat.S_ISREG(mode):
            raise Refused("not-a-regular-file", "not a regular file (a FIFO, device or folder)")
        return real


class NotRegularFile(OSError):
    """A FIFO, device or folder where a photo file was expected."""


def read_local_regular(path: str, limit: int | None) -> bytes:
    """A local file's bytes (at most ``limit`` + 1), opened without blocking on a FIFO and taken
    only when it is a regular file (it may have changed since the manifest was checked)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{path} is not a regular file (a FIFO, device or folder)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read() if limit is None else handle.read(limit + 1)
    finally:
        os.close(fd)
