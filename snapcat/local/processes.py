"""Child server processes for one machine: start them so none outlives its parent, wait until
they answer, stop them gracefully."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def project_root() -> Path:
    """The folder holding both ``snapcat/`` and ``serving/`` (a checkout or site-packages)."""
    return Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment for child servers: ``serving`` importable from a checkout too, and
    TensorFlow's start-up chatter off."""
    env = dict(os.environ)
    root = str(project_root())
    if (project_root() / "serving" / "__main__.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM if this process dies, so no server outlives its parent."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    command: list[str], log: Path | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    output = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            command,
            env={**child_env(), **(extra_env or {})},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        if output:
            output.close()


def stop_process(process: subprocess.Popen, grace: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_http_ok(
    url: str,
    timeout: float,
    processes: list[subprocess.Popen] = (),
    interval: float = 0.25,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Polls ``url`` until it answers 200; fails early if one of ``processes`` exits, or when
    ``alive`` (for what is not a child process, such as a container) says it has stopped."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[:4]} exited with code {process.returncode}")
        if alive is not None and not alive():
            raise RuntimeError(f"stopped before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(interval)
    raise TimeoutError(f"{url} not ready after {timeout:g} s ({last})")
