"""``snapcat serve``: run the model locally with the same API as production.

- ``snapcat serve predictor``: the exported SavedModel behind TF Serving's REST API
  (:mod:`snapcat.predictor`; production runs the real TF Serving through KServe).
- ``snapcat serve transformer``: the KServe transformer, i.e. ``python -m serving``, exactly what
  the container runs.
- ``snapcat serve local``: both, as two child processes wired together (:class:`LocalStack`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.predictor import DEFAULT_BATCH_TIMEOUT_MS, DEFAULT_MAX_BATCH_SIZE, DEFAULT_PORT
    from snapcat.transformer_core import (
        DEFAULT_MAX_BATCH,
        DEFAULT_MAX_IMAGE_BYTES,
        DEFAULT_MAX_REQUEST_BYTES,
        DEFAULT_MODEL_NAME,
        DEFAULT_PREDICTOR_TIMEOUT,
        DEFAULT_TOP_K,
    )

    p = sub.add_parser(
        "serve",
        help="serve a model locally (predictor, transformer, or both)",
        description="Local serving with production's APIs: the transformer is the same code "
        "KServe runs; the predictor follows TF Serving's REST API.",
    )
    servers = p.add_subparsers(dest="server", required=True, metavar="SERVER")

    pred = servers.add_parser(
        "predictor",
        help="serve an exported model with TF Serving's REST API",
        description="Serves the highest version under MODEL_DIR: GET /v1/models/NAME, "
        "GET /v1/models/NAME/metadata, POST /v1/models/NAME:predict (instances or inputs, "
        'binary strings as {"b64": ...}); batches concurrent requests.',
    )
    pred.add_argument("--model-dir", required=True, help="exported model folder (MODEL_DIR)")
    pred.add_argument("--port", type=int, default=DEFAULT_PORT)
    pred.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    pred.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    pred.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="images per model call"
    )
    pred.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=DEFAULT_BATCH_TIMEOUT_MS,
        help="longest a batch waits for the requests it expects (see snapcat.predictor)",
    )
    pred.set_defaults(handler=run_predictor)

    tr = servers.add_parser(
        "transformer",
        help="run the KServe transformer (python -m serving) against a predictor",
        description="Starts `python -m serving` (the container's entrypoint) with these "
        "options translated to KServe's flags.",
    )
    tr.add_argument("--predictor-host", required=True, help="the predictor's HOST:PORT")
    tr.add_argument("--port", type=int, default=8080)
    tr.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    tr.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    tr.add_argument(
        "--model-dir",
        default="/mnt/models",
        help="the exported model folder whose labels to use (the one the predictor serves)",
    )
    tr.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    tr.add_argument("--max-image-bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES)
    tr.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    tr.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH)
    tr.add_argument("--predictor-timeout", type=float, default=DEFAULT_PREDICTOR_TIMEOUT)
    tr.set_defaults(handler=run_transformer)

    loc = servers.add_parser(
        "local",
        help="predictor + transformer wired together (the demo)",
        description="Starts the predictor and the transformer as two processes, waits until "
        "both are ready, prints the URL, and stops both on Ctrl-C or SIGTERM.",
    )
    loc.add_argument("--model-dir", required=True, help="exported model folder (MODEL_DIR)")
    loc.add_argument("--port", type=int, default=8080, help="the transformer's port")
    loc.add_argument("--predictor-port", type=int, default=0, help="default: a free port")
    loc.add_argument("--host", default="127.0.0.1")
    loc.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    loc.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    loc.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for start-up")
    loc.set_defaults(handler=run_local)


# ---------------------------------------------------------------------------------- helpers
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


def transformer_command(
    *,
    predictor_host: str,
    port: int,
    model_name: str,
    model_dir: str,
    top_k: int | None = None,
    host: str = "127.0.0.1",
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """``python -m serving ...`` with KServe's flags, bound to ``host``."""
    command = [
        sys.executable,
        "-m",
        "serving",
        f"--model_name={model_name}",
        f"--predictor_host={predictor_host}",
        f"--http_port={port}",
        f"--host={host}",
        f"--model_dir={model_dir}",
    ]
    if top_k is not None:
        command.append(f"--top_k={top_k}")
    return command + list(extra)


def predictor_command(
    *, model_dir: str, port: int, model_name: str, host: str = "127.0.0.1", extra=()
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snapcat.cli",
        "serve",
        "predictor",
        f"--model-dir={model_dir}",
        f"--port={port}",
        f"--host={host}",
        f"--model-name={model_name}",
        *extra,
    ]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM if this process dies, so no server outlives its parent."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(command: list[str], log: Path | None = None) -> subprocess.Popen:
    output = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            command,
            env=child_env(),
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
    url: str, timeout: float, processes: list[subprocess.Popen] = (), interval: float = 0.25
) -> None:
    """Polls ``url`` until it answers 200; fails early if one of ``processes`` exits."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[:4]} exited with code {process.returncode}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(interval)
    raise TimeoutError(f"{url} not ready after {timeout:g} s ({last})")


class LocalStack:
    """The predictor and the transformer as two child processes, wired together::

        with LocalStack("models/listing-category", port=8080) as stack:
            SnapcatClient(stack.url).classify(["photo.jpg"])

    ``log_dir`` sends each server's output to ``predictor.log`` / ``transformer.log`` there
    (default: this process's terminal).
    """

    def __init__(
        self,
        model_dir: str,
        *,
        port: int = 0,
        predictor_port: int = 0,
        host: str = "127.0.0.1",
        model_name: str | None = None,
        top_k: int | None = None,
        log_dir: str | Path | None = None,
        transformer_args: tuple[str, ...] = (),
    ):
        from snapcat.transformer_core import DEFAULT_MODEL_NAME

        self.model_dir = str(model_dir)
        self.host = host
        self.port = port or free_port(host)
        self.predictor_port = predictor_port or free_port(host)
        self.model_name = model_name or DEFAULT_MODEL_NAME
        self.top_k = top_k
        self.log_dir = Path(log_dir) if log_dir else None
        self.transformer_args = tuple(transformer_args)
        self.predictor: subprocess.Popen | None = None
        self.transformer: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def predictor_url(self) -> str:
        return f"http://{self.host}:{self.predictor_port}"

    def _log(self, name: str) -> Path | None:
        if not self.log_dir:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{name}.log"

    def start(self, timeout: float = 300.0) -> LocalStack:
        from snapcat.model_info import latest_version_dir

        latest_version_dir(self.model_dir)  # fail now, not in a child, on a wrong folder
        self.predictor = spawn(
            predictor_command(
                model_dir=self.model_dir,
                port=self.predictor_port,
                model_name=self.model_name,
                host=self.host,
            ),
            self._log("predictor"),
        )
        self.transformer = spawn(
            transformer_command(
                predictor_host=f"{self.host}:{self.predictor_port}",
                port=self.port,
                model_name=self.model_name,
                model_dir=self.model_dir,
                top_k=self.top_k,
                host=self.host,
                extra=self.transformer_args,
            ),
            self._log("transformer"),
        )
        try:
            # The transformer's model readiness includes the predictor's.
            wait_http_ok(
                f"{self.url}/v1/models/{self.model_name}",
                timeout,
                [self.predictor, self.transformer],
            )
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.predictor, self.transformer))

    def stop(self) -> None:
        for process in (self.transformer, self.predictor):
            if process is not None:
                stop_process(process)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- handlers
def run_predictor(args: argparse.Namespace) -> int:
    from snapcat.cli import UserError
    from snapcat.model_info import latest_version_dir
    from snapcat.predictor import serve

    try:
        latest_version_dir(args.model_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    serve(
        args.model_dir,
        port=args.port,
        host=args.host,
        model_name=args.model_name,
        max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
    )
    return 0


def run_transformer(args: argparse.Namespace) -> int:
    """Replaces this process with ``python -m serving`` (no TensorFlow, same code as KServe)."""
    command = transformer_command(
        predictor_host=args.predictor_host,
        port=args.port,
        model_name=args.model_name,
        model_dir=args.model_dir,
        top_k=args.top_k,
        host=args.host,
        extra=[
            f"--max_image_bytes={args.max_image_bytes}",
            f"--max_request_bytes={args.max_request_bytes}",
            f"--max_batch={args.max_batch}",
            f"--predictor_timeout={args.predictor_timeout}",
        ],
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, child_env())
    return 0  # pragma: no cover


def run_local(args: argparse.Namespace) -> int:
    from snapcat.cli import UserError

    stack = LocalStack(
        args.model_dir,
        port=args.port,
        predictor_port=args.predictor_port,
        host=args.host,
        model_name=args.model_name,
        top_k=args.top_k,
    )

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        try:
            stack.start(args.timeout)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from exc
        except (RuntimeError, TimeoutError) as exc:
            raise UserError(f"the local servers did not start: {exc}") from exc
        print(
            f"serving {args.model_name} at {stack.url} (predictor {stack.predictor_url})\n"
            f"  snapcat classify PHOTO... --url {stack.url} --model-name {args.model_name}\n"
            "Ctrl-C stops both servers.",
            flush=True,
        )
        while stack.alive():
            time.sleep(0.5)
        print("snapcat serve local: a server exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
