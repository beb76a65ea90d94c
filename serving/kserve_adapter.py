"""Every use of KServe's private or undocumented hooks, in one place.

The transformer runs ``kserve.ModelServer`` with its own uvicorn config, middleware and exception
handlers (:mod:`serving.server`), reads KServe's command-line flags (:mod:`serving.__main__`) and
forwards KServe's tracing headers to the predictor (:mod:`serving.predictor_client`). KServe
offers no public way to do any of these, so they go through names KServe may rename in any
release. Each one is listed in :data:`HOOKS` with the signature this module relies on, and
``tests/serve/test_kserve_adapter.py`` fails naming the KServe version and the hook when one
changes: upgrading KServe means reading that test's failures, not debugging a server that no
longer starts or silently lost its guards.

Written against KServe 0.21 (:data:`KSERVE_VERSION` is the installed one).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI
from kserve import Model, ModelServer, model_server
from kserve import model as kserve_model
from kserve.constants import constants as kserve_constants
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.model import InferenceVerb, append_forwardable_headers
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest import server as kserve_rest_server
from kserve.protocol.rest.server import RESTServer

KSERVE_VERSION = importlib.metadata.version("kserve")
#: The middleware KServe's ``RESTServer._add_middlewares`` adds to log each request's timings.
TimingMiddleware = kserve_rest_server.TimingMiddleware

__all__ = [
    "HOOKS",
    "INFERENCE_CONTENT_LENGTH_HEADER",
    "KSERVE_VERSION",
    "DataPlane",
    "HookedRESTServer",
    "InferenceVerb",
    "TimingMiddleware",
    "append_forwardable_headers",
    "kserve_flag_actions",
    "register_models",
    "rest_server_arguments",
    "serve",
]


@dataclass(frozen=True)
class Hook:
    """One private or undocumented KServe name this module uses: ``owner.name``, and for a
    callable the parameter names it is called with (``None``: an attribute or a constant)."""

    owner: object
    name: str
    parameters: tuple[str, ...] | None = None

    @property
    def qualified(self) -> str:
        return f"{getattr(self.owner, '__name__', self.owner)}.{self.name}"


#: Instance attributes ``ModelServer.__init__`` sets that :func:`serve` and
#: :func:`rest_server_arguments` read or write (checked on an instance by the test).
MODEL_SERVER_ATTRIBUTES = (
    "_rest_server",
    "servers",
    "dataplane",
    "model_repository_extension",
    "http_port",
    "access_log_format",
    "grace_period",
    "event_loop",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
)

HOOKS: tuple[Hook, ...] = (
    # ModelServer.start, re-done by serve(): KServe's builds its own RESTServer.
    Hook(ModelServer, "_register_and_check_atleast_one_model_is_ready", ("self", "models")),
    Hook(ModelServer, "_serve", ("self",)),
    Hook(ModelServer, "setup_event_loop", ("self",)),
    Hook(ModelServer, "register_signal_handler", ("self",)),
    # RESTServer: its constructor as ModelServer.start calls it, its uvicorn config (``config``,
    # an instance attribute) and the two build steps the transformer extends.
    Hook(
        RESTServer,
        "__init__",
        (
            "self",
            "app",
            "data_plane",
            "model_repository_extension",
            "http_port",
            "access_log_format",
            "workers",
            "grace_period",
            "event_loop",
            "timeout_keep_alive",
            "ssl_certfile",
            "ssl_keyfile",
        ),
    ),
    Hook(RESTServer, "_add_middlewares", ("self", "app")),
    # The per-request timing-log middleware KServe's _add_middlewares adds (removed without -v).
    Hook(kserve_rest_server, "TimingMiddleware"),
    Hook(RESTServer, "_add_exception_handlers", ("self", "app")),
    Hook(RESTServer, "start", ("self",)),
    # DataPlane methods serving.server.PredictorAwareDataPlane overrides.
    Hook(DataPlane, "decode", ("self", "body", "headers", "protocol_version", "model_name")),
    Hook(DataPlane, "live", ()),
    Hook(DataPlane, "get_model", ("self", "name")),
    Hook(DataPlane, "ready", ("self",)),
    Hook(DataPlane, "model_ready", ("self", "model_name", "disable_predictor_health_check")),
    Hook(DataPlane, "model_registry"),
    # KServe's module-level flag parser (its actions are copied into ours).
    Hook(model_server, "parser"),
    # The headers KServe forwards to the predictor (tracing, request id).
    Hook(kserve_model, "append_forwardable_headers", ("headers", "base")),
    # The verb Model.__call__ is called with (the transformer serves PREDICT and EXPLAIN), and
    # the explain handler it calls for EXPLAIN (the transformer overrides it).
    Hook(kserve_model, "InferenceVerb"),
    Hook(Model, "__call__", ("self", "body", "headers", "verb")),
    Hook(Model, "explain", ("self", "payload", "headers")),
    Hook(kserve_constants, "INFERENCE_CONTENT_LENGTH_HEADER"),
)


class HookedRESTServer(RESTServer):
    """KServe's ``RESTServer`` with its two private build steps turned into public ones a
    subclass overrides: :meth:`add_middlewares` (after KServe's: added later is outermost) and
    :meth:`add_exception_handlers` (after KServe's: Starlette keeps the last per class)."""

    def _add_middlewares(self, app: FastAPI) -> None:
        super()._add_middlewares(app)
        self.add_middlewares(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        self.add_exception_handlers(app)

    def add_middlewares(self, app: FastAPI) -> None:
        """Middleware to add around KServe's."""

    def add_exception_handlers(self, app: FastAPI) -> None:
        """Exception handlers that replace KServe's."""


def silence_kserve_deprecations() -> None:
    """KServe's V1 routes answer with FastAPI's ``ORJSONResponse``, which FastAPI now deprecates
    with a warning at start-up and on requests: KServe's code, nothing an operator can act on,
    and it buried the transformer's own lines. Only that warning is ignored (checked by
    tests/serve/test_kserve_adapter.py: when a KServe upgrade stops using it, drop this)."""
    from fastapi.exceptions import FastAPIDeprecationWarning

    warnings.filterwarnings(
        "ignore", message="ORJSONResponse is deprecated", category=FastAPIDeprecationWarning
    )


def rest_server_arguments(server: ModelServer) -> dict:
    """The arguments ``ModelServer.start`` builds its ``RESTServer`` with (but one worker)."""
    return {
        "app": "kserve.model_server:app",
        "data_plane": server.dataplane,
        "model_repository_extension": server.model_repository_extension,
        "http_port": server.http_port,
        "access_log_format": server.access_log_format,
        "workers": 1,
        "grace_period": server.grace_period,
        "event_loop": server.event_loop,
        "timeout_keep_alive": server.timeout_keep_alive,
        "ssl_certfile": server.ssl_certfile,
        "ssl_keyfile": server.ssl_keyfile,
    }


def register_models(server: ModelServer, models: Sequence) -> None:
    """Registers the models and starts them, as ``ModelServer.start`` does first; raises
    ``kserve.errors.NoModelReady`` when none is ready."""
    server._register_and_check_atleast_one_model_is_ready(list(models))


def serve(server: ModelServer, rest_server: RESTServer) -> None:
    """The rest of ``ModelServer.start`` with ``rest_server`` instead of KServe's own: runs it
    until a signal stops it (``ModelServer.stop`` reads ``_rest_server``)."""
    server._rest_server = rest_server
    server.servers.append(rest_server.start())
    server.setup_event_loop()
    server.register_signal_handler()
    run_event_loop(server._serve(), server.event_loop)


def run_event_loop(main, event_loop: str = "auto"):
    """Runs ``main`` on the loop ``--event_loop`` names, as uvicorn reads the flag: ``auto`` is
    uvloop when installed (the serving lock has it), else asyncio. KServe's own ``start`` runs
    ``asyncio.run`` whatever the flag says; uvloop's C event loop and transports take a
    measurable share off the transformer's CPU per photo (docs/serving.md, "Benchmark")."""
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def kserve_flag_actions(keep: Callable[[argparse.Action], bool]) -> argparse.ArgumentParser:
    """A parent parser (``add_help=False``) with the actions of KServe's model-server parser
    that ``keep`` accepts (argparse has no public way to copy actions either)."""
    parent = argparse.ArgumentParser(add_help=False)
    for action in model_server.parser._actions:
        if keep(action):
            parent._add_action(action)
    return parent
