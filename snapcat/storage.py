"""Local paths and object-store URIs (``gs://``, ``s3://``, ...) behind one small interface.

fsspec does the work; the cloud back-ends (gcsfs, s3fs) are the optional ``cloud`` extra and are
only imported when such a URI is used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fsspec

#: Written last into every finished output folder; readers refuse a folder without it.
SUCCESS_MARKER = "_SUCCESS"


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def read_bytes(uri: str, limit: int | None = None) -> bytes:
    """Reads a file; with ``limit``, at most ``limit + 1`` bytes, so a caller can tell a huge file
    is over its cap without loading it whole."""
    with fsspec.open(uri, "rb") as handle:
        return handle.read() if limit is None else handle.read(limit + 1)


def exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def is_complete(uri: str) -> bool:
    return exists(join(uri, SUCCESS_MARKER))


def require_complete(uri: str, what: str = "dataset") -> None:
    if not is_complete(uri):
        raise FileNotFoundError(
            f"{uri} is not a finished {what}: it has no {SUCCESS_MARKER} marker "
            "(missing, or a run that did not complete)"
        )


def ensure_can_publish(output: str, overwrite: bool) -> None:
    """Refuses to replace a non-empty ``output`` unless asked to (checked before long work)."""
    if exists(output) and not overwrite:
        fs, path = fsspec.core.url_to_fs(output)
        if not fs.isdir(path) or fs.ls(path):
            raise FileExistsError(
                f"{output} already exists; pass --overwrite to replace it (atomically)"
            )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_staging(parent: Path, prefix: str) -> list[Path]:
    """Removes ``parent/<prefix><pid>-...`` folders whose writing process is gone (a killed
    ``prepare`` or ``export`` cannot clean up after itself); returns what it removed. Folders
    of a process still running, or without a pid in their name, are left alone."""
    removed = []
    if not parent.is_dir():
        return removed
    for path in parent.glob(f"{prefix}*"):
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if path.is_dir() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def publish_dir(output: str, overwrite: bool) -> Iterator[Path]:
    """Yields an empty local staging folder; on success makes it appear at ``output`` at once.

    Locally the staging folder is a sibling that is renamed into place, so readers see either the
    old complete output or the new one, never a half-written mix; a failure leaves the old output
    untouched. For object stores, which have no rename, the old marker is removed first and the
    new one written last, so an interrupted upload never looks complete.
    """
    ensure_can_publish(output, overwrite)
    if is_remote(output):
        with tempfile.TemporaryDirectory(prefix="snapcat-stage-") as staging:
            yield Path(staging)
            fs, path = fsspec.core.url_to_fs(output)
            marker = f"{path.rstrip('/')}/{SUCCESS_MARKER}"
            if fs.exists(marker):
                fs.rm(marker)
            if fs.exists(path):
                fs.rm(path, recursive=True)
            files = [p for p in Path(staging).rglob("*") if p.is_file()]
            for local in files:
                if local.name != SUCCESS_MARKER:
                    fs.put_file(str(local), f"{path.rstrip('/')}/{local.relative_to(staging)}")
            fs.pipe_file(marker, b"")
        return

    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(target.parent, f".{target.name}.staging-")
    sweep_stale_staging(target.parent, f".{target.name}.old-")
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent)
    )
    # mkdtemp makes the folder private (0700); the published dataset gets the umask's mode like
    # any folder its user creates.
    staging.chmod(0o777 & ~_umask())
    try:
        yield staging
        (staging / SUCCESS_MARKER).write_bytes(b"")
        if target.exists():
            retired = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
