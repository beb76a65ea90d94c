"""The transformer's limits without servers: the decode budget (issue 10, finding 2), capacity
from cgroup limits (finding 3), the request guard's shedding, 415 and 413 (findings 3 and 6),
liveness without a model (finding 1) and the flags that did nothing (finding 6)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, make_image_bytes

from snapcat.contract.image_spec import ImageSpec
from snapcat.imaging.decode_budget import (
    DecodeBudget,
    DecodeBudgetBusyError,
    DecodeBudgetExceededError,
    DecodeDeadlineError,
)
from snapcat.imaging.normalize import normalize_image
from snapcat.serve.container_limits import ContainerLimits, read_container_limits

MB = 1024 * 1024
BOMB_WEBP = REPO_ROOT / "tests" / "data" / "blank-16383x6100-lossless.webp"


# ------------------------------------------------------------------------------ decode budget
def test_a_tiny_file_that_decodes_to_gigabytes_is_refused_before_decoding():
    budget = DecodeBudget(total_bytes=1024 * MB, per_photo_bytes=256 * MB)
    seen = []

    def admit(image):
        seen.append(image.size)
        reservation.admit(image)  # raises: the hook runs before the pixels are decoded

    with pytest.raises(DecodeBudgetExceededError) as caught, budget.photo() as reservation:
        normalize_image(BOMB_WEBP.read_bytes(), ImageSpec(), before_decode=admit)
    assert seen == [(16383, 6100)]
    assert caught.value.reason == "over-decode-budget"
    assert "per-photo decode budget" in str(caught.value)
    assert budget.in_use == 0


def test_jpeg_is_estimated_at_its_dct_scaled_size_other_formats_at_full_size():
    spec = ImageSpec(size=299)
    seen = {}

    def probe(fmt):
        budget = DecodeBudget(total_bytes=1024 * MB, per_photo_bytes=1024 * MB)
        with budget.photo() as reservation:

            def admit(image):
                reservation.admit(image)
                seen[fmt] = (image.size, reservation.reserved)

            normalize_image(make_image_bytes(fmt, size=(2400, 1800)), spec, before_decode=admit)
        assert budget.in_use == 0

    probe("JPEG")
    probe("PNG")
    assert seen["JPEG"][0] == (600, 450)  # 1/4 scale still covers 299 px
    assert seen["PNG"][0] == (2400, 1800)
    assert seen["PNG"][1] > 8 * seen["JPEG"][1]  # 16x the pixels, plus a fixed overhead


def test_process_budget_makes_photos_wait_then_refuses_past_the_deadline():
    spec = ImageSpec(size=96)
    photo = make_image_bytes("PNG", size=(1000, 800))  # ~9 MB estimated
    budget = DecodeBudget(total_bytes=12 * MB, per_photo_bytes=12 * MB, deadline_seconds=0.3)
    with budget.photo() as holder:
        normalize_image(photo, spec, before_decode=holder.admit)  # holds its reservation
        assert budget.in_use > 8 * MB
        start = time.monotonic()
        with pytest.raises(DecodeBudgetBusyError), budget.photo() as second:
            normalize_image(photo, spec, before_decode=second.admit)
        assert 0.25 < time.monotonic() - start < 2
    # released: a waiting photo proceeds as soon as memory frees up
    with budget.photo() as holder:
        normalize_image(photo, spec, before_decode=holder.admit)
        threading.Timer(0.1, holder.release).start()
        with budget.photo(time.monotonic() + 5) as second:
            normalize_image(photo, spec, before_decode=second.admit)
    assert budget.in_use == 0


def test_a_photo_past_its_deadline_is_not_decoded():
    budget = DecodeBudget(total_bytes=64 * MB, per_photo_bytes=64 * MB)
    with pytest.raises(DecodeDeadlineError), budget.photo(time.monotonic() - 1) as late:
        normalize_image(make_image_bytes("JPEG"), ImageSpec(), before_decode=late.admit)


def test_core_maps_budget_errors_to_413_and_503(tmp_path):
    from test_transformer_core import make_info

    from snapcat.serve.errors import instance_errors
    from snapcat.serve.transformer_core import TransformerConfig, TransformerCore

    core = TransformerCore(TransformerConfig(max_decode_bytes=64 * MB), spec=make_info().spec)
    result = core.normalize(0, BOMB_WEBP.read_bytes())
    assert (result.reason, result.status) == ("over-decode-budget", 413)
    assert instance_errors([result]).status == 413
    late = core.normalize(1, make_image_bytes("JPEG"), deadline=time.monotonic() - 1)
    assert (late.reason, late.status) == ("deadline-exceeded", 503)
    assert instance_errors([result, late]).status == 503


# ------------------------------------------------------------------------------ capacity
def _cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_container_limits_come_from_cgroup_not_the_nodes_cores(tmp_path):
    v2 = read_container_limits(
        _cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n", "memory.max": "1073741824\n"})
    )
    assert (v2.cpus, v2.whole_cpus, v2.memory_bytes) == (1.5, 1, 1024 * MB)
    v1 = read_container_limits(
        _cgroup(
            tmp_path / "v1",
            {
                "cpu/cpu.cfs_quota_us": "50000",
                "cpu/cpu.cfs_period_us": "100000",
                "memory/memory.limit_in_bytes": "536870912",
            },
        )
    )
    assert (v1.cpus, v1.whole_cpus, v1.memory_bytes) == (0.5, 1, 512 * MB)
    unlimited = read_container_limits(
        _cgroup(tmp_path / "none", {"cpu.max": "max 100000", "memory.max": "max"})
    )
    assert unlimited.memory_bytes is None and unlimited.cpus >= 1


def test_capacity_follows_the_limits():
    from serving.capacity import plan_capacity

    small = plan_capacity(ContainerLimits(cpus=1.0, memory_bytes=1024 * MB))
    big = plan_capacity(ContainerLimits(cpus=4.0, memory_bytes=4096 * MB))
    assert small.workers == 1 and big.workers == 4
    assert small.max_photos == 4 and big.max_photos == 16
    assert small.decode_budget_bytes < 1024 * MB / 2
    assert big.decode_budget_bytes > 3 * small.decode_budget_bytes
    assert plan_capacity(ContainerLimits(2.0, None), max_photos=3).max_photos == 3


# ------------------------------------------------------------------------------ request guard
def _guarded(max_requests=1, max_request_bytes=1000, gate: asyncio.Event | None = None):
    from serving.http_layer import RequestGuard

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if gate is not None:
            await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    return RequestGuard(
        app,
        max_request_bytes=max_request_bytes,
        max_requests=max_requests,
        max_body_bytes_in_flight=10_000,
    )


def test_guard_sheds_inference_requests_beyond_capacity_with_retry_after():
    async def scenario():
        gate = asyncio.Event()
        transport = httpx.ASGITransport(app=_guarded(max_requests=1, gate=gate))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            url = "/v1/models/m:predict"
            first = asyncio.create_task(client.post(url, json={"instances": []}))
            await asyncio.sleep(0.05)
            # Answered while the first request still holds the only slot (the gate is shut):
            # a shed request that queued instead would trip the guard.
            shed = await asyncio.wait_for(client.post(url, json={"instances": []}), 10)
            gate.set()
            return (await first), shed

    first, shed = asyncio.run(scenario())
    assert first.status_code == 200
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert "capacity" in shed.json()["error"]


@pytest.mark.parametrize(
    ("path", "content", "headers", "status"),
    [
        ("/v1/models/m:predict", b"{}", {"content-type": "text/plain"}, 415),
        ("/v1/models/m:predict", b"{}", {"content-type": "application/x-www-form-urlencoded"}, 415),
        ("/v1/models/m:predict", b"x" * 2000, {"content-type": "application/json"}, 413),
        ("/v1/models/m:predict", b"{}", {"content-type": "application/json; charset=utf-8"}, 200),
        ("/v2/models/m/infer", b"{}", {}, 200),
        ("/v2/repository/models/m/unload", b"", {}, 404),
    ],
)
def test_guard_answers(path, content, headers, status):
    async def scenario():
        transport = httpx.ASGITransport(app=_guarded())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, content=content, headers=headers)

    assert asyncio.run(scenario()).status_code == status


# ------------------------------------------------------------------------------ health, flags
def test_liveness_fails_when_no_model_is_loaded():
    from kserve.errors import ServerNotLive
    from kserve.model_repository import ModelRepository

    from serving.server import PredictorAwareDataPlane

    class Stub:
        name = "m"
        ready = True

    registry = ModelRepository()
    plane = PredictorAwareDataPlane(model_registry=registry)
    with pytest.raises(ServerNotLive):
        asyncio.run(plane.live())
    registry.update(Stub(), "m")
    assert asyncio.run(plane.live()) == {"status": "alive"}
    Stub.ready = False  # unloaded
    with pytest.raises(ServerNotLive):
        asyncio.run(plane.live())


def test_an_inference_request_does_not_ask_the_predictor_for_its_status():
    """KServe's DataPlane.get_model awaits the model's healthy() on every request, which here is
    an HTTP status call to the predictor: ours only checks that the model is loaded."""
    from kserve.errors import ModelNotFound, ModelNotReady
    from kserve.model_repository import ModelRepository

    from serving.server import PredictorAwareDataPlane

    class Stub:
        name = "m"
        ready = True
        probes = 0

        async def healthy(self):
            Stub.probes += 1
            return True

    registry = ModelRepository()
    registry.update(Stub(), "m")
    plane = PredictorAwareDataPlane(model_registry=registry)
    assert isinstance(asyncio.run(plane.get_model("m")), Stub)
    assert Stub.probes == 0
    with pytest.raises(ModelNotFound):
        asyncio.run(plane.get_model("other"))
    Stub.ready = False
    with pytest.raises(ModelNotReady):
        asyncio.run(plane.get_model("m"))


@pytest.mark.parametrize("verbose", [False, True])
def test_per_request_log_lines_only_when_verbose(verbose):
    """By default no line per successful request (uvicorn's access log, KServe's kserve.trace
    timings, snapcat's success line); --verbose turns all three on. Refusals log either way."""
    import logging

    from serving.__main__ import build_parser, quiet_request_logs
    from serving.http_layer import request_logger

    names = ("uvicorn.access", "kserve.trace", "snapcat.serving.requests")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        args = build_parser().parse_args(["--verbose"] if verbose else [])
        assert args.verbose is verbose
        quiet_request_logs(args.verbose)
        for name in ("uvicorn.access", "kserve.trace"):
            assert logging.getLogger(name).isEnabledFor(logging.INFO) is verbose
        assert request_logger.isEnabledFor(logging.DEBUG) is verbose
        assert logging.getLogger("snapcat.serving").isEnabledFor(logging.WARNING)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_flags_that_did_nothing_are_gone():
    from serving.__main__ import build_parser

    text = build_parser().format_help()
    for flag in (
        "--predictor_request_timeout_seconds",
        "--predictor_request_retries",
        "--enable_predictor_health_check",
        "--enable_grpc",
        "--grpc_port",
        "--workers",
    ):
        assert flag not in text, flag
    for flag in ("--host", "--max_decode_bytes", "--max_photos_in_flight", "--header_timeout"):
        assert flag in text, flag
