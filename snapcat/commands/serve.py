"""``snapcat serve``: run the model locally with the same API as production.

- ``snapcat serve predictor``: the exported SavedModel behind TF Serving's REST API
  (:mod:`snapcat.local.predictor`; production runs the real TF Serving through KServe).
- ``snapcat serve transformer ARGS...``: ``python -m serving ARGS...``, exactly what the
  container runs; its flags are the container's (``snapcat serve transformer --help``).
- ``snapcat serve local``: both, as two child processes wired together
  (:class:`snapcat.local.stack.LocalStack`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.contract.service_name import DEFAULT_MODEL_NAME
    from snapcat.local.predictor import DEFAULT_PORT
    from snapcat.serve.transformer_core import DEFAULT_TOP_K

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
        "GET /v1/models/NAME/metadata, POST /v1/models/NAME:predict (instances, binary strings "
        'as {"b64": ...}); replays the version\'s warm-up records, then batches requests by '
        "TF Serving's batching parameters file.",
    )
    pred.add_argument("--model-dir", required=True, help="exported model folder (MODEL_DIR)")
    pred.add_argument("--port", type=int, default=DEFAULT_PORT)
    pred.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    pred.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    _batching_argument(pred)
    pred.set_defaults(handler=run_predictor)

    tr = servers.add_parser(
        "transformer",
        add_help=False,  # --help goes to python -m serving, which owns the flags
        help="run the KServe transformer (python -m serving ARGS...) against a predictor",
        description="Runs `python -m serving` (the container's entrypoint) with the arguments "
        "given, bound to 127.0.0.1 unless --host says otherwise.",
    )
    tr.add_argument("serving_args", nargs=argparse.REMAINDER, metavar="ARGS")
    # Options the CLI does not know pass through too (snapcat.cli hands them over).
    tr.set_defaults(handler=run_transformer, passthrough=True)

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
    loc.add_argument(
        "--log-dir",
        help="where predictor.log and transformer.log go (default: a new temporary folder); the "
        "terminal shows their warnings and errors, every line with snapcat -v",
    )
    _batching_argument(loc)
    loc.set_defaults(handler=run_local)


def _batching_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batching-parameters-file",
        metavar="FILE",
        help="TF Serving's --batching_parameters_file (text-format BatchingParameters); default: "
        "the base manifests' CPU sizing (manifests/base/tfserving/batching_parameters.txt, "
        "packaged with snapcat)",
    )


def _batching(args: argparse.Namespace):
    """The parsed batching file, or a UserError naming what is wrong with it."""
    from snapcat.contract.tf_serving_config import BatchingParameters

    return BatchingParameters.from_file(args.batching_parameters_file)


# ---------------------------------------------------------------------------------- handlers
def run_predictor(args: argparse.Namespace) -> int:
    from snapcat.contract.model_info import latest_version_dir
    from snapcat.errors import UserError
    from snapcat.local.predictor import serve

    batching = _batching(args)
    try:
        latest_version_dir(args.model_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    serve(
        args.model_dir,
        port=args.port,
        host=args.host,
        model_name=args.model_name,
        batching=batching,
    )
    return 0


def run_transformer(args: argparse.Namespace) -> int:
    """Replaces this process with ``python -m serving ARGS...`` (no TensorFlow, KServe's code)."""
    from snapcat.local.processes import child_env
    from snapcat.local.stack import serving_module_command

    command = serving_module_command("--host=127.0.0.1", *args.serving_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, child_env())
    return 0  # pragma: no cover


def run_local(args: argparse.Namespace) -> int:
    import tempfile

    from snapcat.errors import UserError
    from snapcat.local.log_echo import LogEcho
    from snapcat.local.stack import LocalStack

    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="snapcat-serve-local-"))
    stack = LocalStack(
        args.model_dir,
        port=args.port,
        predictor_port=args.predictor_port,
        host=args.host,
        model_name=args.model_name,
        top_k=args.top_k,
        batching_parameters_file=args.batching_parameters_file,
        log_dir=log_dir,
        # snapcat -v: the transformer logs a line per request too (python -m serving --verbose)
        transformer_args=("--verbose",) if getattr(args, "verbose", False) else (),
    )
    _batching(args)  # a bad file is refused here, not in the child
    echo = None

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        try:
            stack.start(args.timeout)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from exc
        except (RuntimeError, TimeoutError) as exc:
            raise UserError(
                f"the local servers did not start: {exc} (their logs: {log_dir})"
            ) from exc
        logs = [log_dir / "predictor.log", log_dir / "transformer.log"]
        echo = LogEcho(logs, verbose=getattr(args, "verbose", False)).start()
        print(
            f"serving {args.model_name} at {stack.url} (predictor {stack.predictor_url})\n"
            f"  snapcat classify PHOTO... --url {stack.url} --model-name {args.model_name}\n"
            f"  logs: {log_dir} (warnings and errors shown here; snapcat -v: every line)\n"
            f"  answer ids signed with the key in {stack.prediction_keys} (a local "
            "`snapcat feedback serve --keys`)\n"
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
        if echo is not None:
            echo.stop()
        signal.signal(signal.SIGTERM, previous)
