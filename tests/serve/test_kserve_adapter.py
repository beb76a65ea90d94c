"""serving/kserve_adapter.py: every private or undocumented KServe hook the transformer uses still
exists with the signature it is called with. A KServe upgrade that renames one fails here, naming
the KServe version and the hook, instead of in a server that no longer starts."""

from __future__ import annotations

import inspect

import pytest
from kserve import ModelServer

from serving import kserve_adapter
from serving.kserve_adapter import HOOKS, KSERVE_VERSION, MODEL_SERVER_ATTRIBUTES, Hook


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.qualified)
def test_each_kserve_hook_exists_with_the_expected_signature(hook: Hook):
    where = f"KServe {KSERVE_VERSION}: {hook.qualified}"
    assert hasattr(hook.owner, hook.name), (
        f"{where} is gone; serving/kserve_adapter.py relies on it (read KServe's changelog and "
        "adapt the adapter)"
    )
    if hook.parameters is None:
        return
    target = getattr(hook.owner, hook.name)
    assert callable(target), f"{where} is no longer callable"
    names = tuple(inspect.signature(target).parameters)
    assert names[: len(hook.parameters)] == hook.parameters, (
        f"{where} now takes {names}; serving/kserve_adapter.py calls it with {hook.parameters}"
    )


def test_the_model_server_attributes_the_adapter_reads_are_set_by_its_constructor():
    server = ModelServer(enable_grpc=False, workers=1)
    for name in MODEL_SERVER_ATTRIBUTES:
        assert hasattr(server, name), (
            f"KServe {KSERVE_VERSION}: ModelServer() no longer sets .{name}, which "
            "serving/kserve_adapter.py reads or writes"
        )
    assert isinstance(server.servers, list), f"KServe {KSERVE_VERSION}: ModelServer.servers"


def test_the_rest_server_is_built_from_the_model_servers_arguments():
    """The arguments ModelServer.start passes are accepted, and the uvicorn config that
    serving.server.TransformerRESTServer replaces parts of is the one its server runs."""
    server = ModelServer(enable_grpc=False, workers=1)
    rest = kserve_adapter.HookedRESTServer(**kserve_adapter.rest_server_arguments(server))
    where = f"KServe {KSERVE_VERSION}: RESTServer"
    assert rest.config.port == server.http_port, f"{where}.config is not its uvicorn config"
    assert rest._server.config is rest.config, (
        f"{where} no longer runs the uvicorn config it exposes as .config: the transformer's "
        "host, header limits and protocol class would be ignored"
    )


def test_the_build_hooks_run_after_kserves_own():
    calls = []

    class Outermost:
        def __init__(self, app):
            self.app = app

    class Recording(kserve_adapter.HookedRESTServer):
        def add_middlewares(self, app):
            calls.append("middlewares")
            app.add_middleware(Outermost)

        def add_exception_handlers(self, app):
            calls.append("exception handlers")

    from fastapi import FastAPI

    server = ModelServer(enable_grpc=False, workers=1)
    rest = Recording(**kserve_adapter.rest_server_arguments(server))
    app = FastAPI()
    rest._add_middlewares(app)
    rest._add_exception_handlers(app)
    assert calls == ["middlewares", "exception handlers"]
    # Added after KServe's own, so outermost (Starlette runs user_middleware[0] first).
    assert len(app.user_middleware) >= 2 and app.user_middleware[0].cls is Outermost


def test_kserve_flags_are_copied_into_a_parent_parser():
    parent = kserve_adapter.kserve_flag_actions(lambda action: action.dest == "http_port")
    assert parent.parse_args(["--http_port", "8123"]).http_port == 8123, (
        f"KServe {KSERVE_VERSION}: kserve.model_server.parser has no --http_port action"
    )


def test_kserve_still_answers_with_the_deprecated_orjson_response_and_only_that_is_silenced():
    """The warning ``silence_kserve_deprecations`` ignores still comes from KServe's routes (when
    this fails after an upgrade, the filter can go); other FastAPI deprecations stay visible."""
    import inspect
    import warnings

    from fastapi.exceptions import FastAPIDeprecationWarning
    from fastapi.responses import ORJSONResponse
    from kserve.protocol.rest import v1_endpoints

    assert "ORJSONResponse" in inspect.getsource(v1_endpoints)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kserve_adapter.silence_kserve_deprecations()
        ORJSONResponse(content={"a": 1})
        warnings.warn("something else is deprecated", FastAPIDeprecationWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("ORJSONResponse" in m for m in messages), messages
    assert "something else is deprecated" in messages
