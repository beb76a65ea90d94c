"""The predictor and the transformer as two local processes wired together: the demo, the
end-to-end tests and the benchmarks run production's transformer against the local predictor
(:mod:`snapcat.local.predictor`) through this."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from snapcat.local.processes import free_port, spawn, stop_process, wait_http_ok


def serving_module_command(*args: str) -> list[str]:
    """``python -m serving ARGS``: the transformer container's entrypoint, in this interpreter."""
    return [sys.executable, "-m", "serving", *args]


def transformer_command(
    *,
    predictor_host: str,
    port: int,
    model_name: str,
    top_k: int | None = None,
    host: str = "127.0.0.1",
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """``python -m serving ...`` with the flags KServe's controller passes, bound to ``host``. No
    model folder: the transformer learns everything about the model from the predictor."""
    command = serving_module_command(
        f"--model_name={model_name}",
        f"--predictor_host={predictor_host}",
        f"--http_port={port}",
        f"--host={host}",
    )
    if top_k is not None:
        command.append(f"--top_k={top_k}")
    return command + list(extra)


def predictor_command(
    *,
    model_dir: str,
    port: int,
    model_name: str,
    host: str = "127.0.0.1",
    batching_parameters_file: str | None = None,
    extra=(),
) -> list[str]:
    """``snapcat serve predictor ...``; without ``batching_parameters_file`` it batches by the
    packaged base (CPU) sizing, as ``manifests/base`` configures TF Serving."""
    if batching_parameters_file:
        extra = (f"--batching-parameters-file={batching_parameters_file}", *extra)
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


class LocalStack:
    """The predictor and the transformer as two child processes, wired together::

        with LocalStack("models/listing-category", port=8080) as stack:
            SnapcatClient(stack.url).classify(["photo.jpg"])

    ``log_dir`` sends each server's output to ``predictor.log`` / ``transformer.log`` there
    (default: this process's terminal). ``batching_parameters_file``: TF Serving's batching
    parameters for the predictor (default: the base manifests' CPU sizing).

    ``prediction_keys``: the key folder the transformer signs prediction ids with (what a local
    ``snapcat feedback serve --keys`` verifies them with); default ``$SNAPCAT_PREDICTION_KEYS``,
    else a fresh key is generated (in ``log_dir``, or a temporary folder) as a Secret would hold.
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
        batching_parameters_file: str | None = None,
        prediction_keys: str | Path | None = None,
    ):
        from snapcat.contract.prediction_signing import KEYS_ENV
        from snapcat.contract.service_name import DEFAULT_MODEL_NAME

        self.prediction_keys = prediction_keys or os.environ.get(KEYS_ENV) or None
        self.model_dir = str(model_dir)
        self.host = host
        self.port = port or free_port(host)
        self.predictor_port = predictor_port or free_port(host)
        self.model_name = model_name or DEFAULT_MODEL_NAME
        self.top_k = top_k
        self.log_dir = Path(log_dir) if log_dir else None
        self.transformer_args = tuple(transformer_args)
        self.batching_parameters_file = batching_parameters_file
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
        from snapcat.contract.model_info import latest_version_dir
        from snapcat.contract.prediction_signing import KEYS_ENV, KeyRing, write_key_folder
        from snapcat.contract.tf_serving_config import BatchingParameters

        # Fail now, not in a child, on a wrong folder or a bad batching file.
        latest_version_dir(self.model_dir)
        BatchingParameters.from_file(self.batching_parameters_file)
        if self.prediction_keys is None:
            parent = self.log_dir or Path(tempfile.mkdtemp(prefix="snapcat-keys-"))
            self.prediction_keys = write_key_folder(parent / "signing-keys")
        KeyRing.load(self.prediction_keys)  # a broken key is refused here too
        self.predictor = spawn(
            predictor_command(
                model_dir=self.model_dir,
                port=self.predictor_port,
                model_name=self.model_name,
                host=self.host,
                batching_parameters_file=self.batching_parameters_file,
            ),
            self._log("predictor"),
        )
        self.transformer = spawn(
            transformer_command(
                predictor_host=f"{self.host}:{self.predictor_port}",
                port=self.port,
                model_name=self.model_name,
                top_k=self.top_k,
                host=self.host,
                extra=self.transformer_args,
            ),
            self._log("transformer"),
            {KEYS_ENV: str(self.prediction_keys)},
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
