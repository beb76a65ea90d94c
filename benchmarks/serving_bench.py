"""Serving benchmark: how close does transformer + predictor get to the raw SavedModel?

Prints, in one run on this machine:

- raw in-process throughput and CPU per photo of the exported signature (``ServingModel.predict``
  on canonical bytes): one caller at batch 1, with the p50 latency of one batch-1 forward pass;
  and as many callers as the predictor has batch threads at batch 1 / 8 / 32, the most this
  TensorFlow configuration does on this machine (one caller leaves a core idle when the model's
  ops run on one intra-op thread), since every image must go through the model;
- end-to-end throughput and p50/p95 latency through the KServe transformer and the local
  predictor (two processes, loopback HTTP, one photo per request) at concurrency 1 and 8;
- the ratio end-to-end / raw by throughput and by CPU time per photo, at concurrency 1 (against
  raw batch 1, one caller) and 8 (against the best raw batch size, parallel callers); target
  >= 0.9 for both;
- the transformer's CPU per photo split by stage (read body, decode JSON/base64, normalize, call
  predictor, shape response, log), from its ``snapcat_transformer_stage_cpu_seconds`` histogram
  (thread CPU clocks) read before and after each measurement, and the rest of its process CPU
  (HTTP server, KServe's routing, middleware) as "other": target <= 3 CPU-ms per photo
  excluding normalization;
- the floor under all of that: a relay (:func:`relay`) on the transformer's own HTTP server and
  predictor client that passes each photo's predictor body through and does nothing else, in
  front of the same predictor at concurrency 1 and 8. Its CPU per photo, plus the normalization
  every transformer must do, bounds the ratio any Python transformer of this design could reach;
  the predictor's own CPU against raw is what the predictor process alone leaves of it;
- bytes per image sent to the predictor, from the transformer's own counters
  (target at 299 px: <= 40 KB).

The local predictor sizes TensorFlow's thread pools from its CPU limit and the model's backbone as
production's TF Serving flags are sized (:func:`snapcat.contract.tf_serving_config.
tf_serving_threads`); this process's raw runs apply the same sizing, so both sides run the same
TensorFlow configuration.

``--baseline-src DIR`` also runs the transformer of another source tree (e.g. ``git archive``
of an earlier commit, unpacked) against the same predictor, in the same rounds: a change's effect
measured on the same machine at the same time.

The predictor batches by TF Serving's batching parameters file, as production does:
``--batching-parameters-file`` (default: ``manifests/base/tfserving/batching_parameters.txt``, the
CPU sizing production's base/dev predictors run with; the prod overlay's file is sized for a GPU).

Rounds interleave raw and end-to-end runs, so both see the same machine, and medians are
reported. On a machine shared with other work, wall-clock figures move with the other load, so
the CPU time per image is measured too (of this process for the raw runs; of the predictor and
transformer processes for the end-to-end runs, the client excluded): its ratio is what the stack
costs over the bare model, whatever else runs.

    .venv/bin/python benchmarks/serving_bench.py            # untrained EfficientNet-Lite0, 224 px
    .venv/bin/python benchmarks/serving_bench.py --backbone xception          # 299 px
    .venv/bin/python benchmarks/serving_bench.py --model-dir MODEL_DIR --photos data/sample

Cost does not depend on the weights, so without ``--model-dir`` an untrained model
(``weights="none"``) of ``--backbone`` is exported to a temporary folder (no download needed).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL_NAME = "listing-category"
_TICKS = os.sysconf("SC_CLK_TCK")


def export_untrained(image_size: int, folder: str, backbone: str = "xception") -> str:
    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.train.export import export_model
    from snapcat.train.modeling import ModelSpec, build_model

    classes = list(Taxonomy.load().trainable_slugs)
    model, _ = build_model(
        ModelSpec(
            backbone=backbone, num_classes=len(classes), image_size=image_size, weights="none"
        )
    )
    export_model(
        model, folder, classes=classes, image_size=image_size, jpeg_quality=90, backbone=backbone
    )
    return folder


def load_photos(folder: Path, limit: int) -> list[bytes]:
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    )
    step = max(1, len(paths) // limit)
    return [p.read_bytes() for p in paths[::step][:limit]]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def raw_run(
    model, canonical: list[bytes], batch: int, seconds: float, callers: int = 1, pause: float = 0.0
) -> dict:
    """``callers`` threads calling the model in-process back to back, ``batch`` images a call:
    with as many callers as the predictor has batch threads, the most this process's TensorFlow
    configuration can do on this machine (one caller leaves a core idle when ops run on one
    thread). ``pause``: seconds each caller sleeps after a call (requests spaced out, as online
    serving sees them; the sleep is in the wall time, not the CPU time)."""
    model.predict(canonical[:batch])  # warm-up at this batch size
    done = [0]
    calls: list[float] = []
    lock = threading.Lock()

    def call_loop(offset: int) -> None:
        i = offset
        while time.perf_counter() - start < seconds or done[0] < 2 * batch * callers:
            t0 = time.perf_counter()
            model.predict([canonical[(i + j) % len(canonical)] for j in range(batch)])
            with lock:
                calls.append(time.perf_counter() - t0)
                done[0] += batch
            i += batch * callers
            if pause:
                time.sleep(pause)

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=call_loop, args=(k * batch,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "throughput": done[0] / wall,
        "cpu_ms": cpu / done[0] * 1000,
        "p50": statistics.median(calls) * 1000,
    }


def stage_sums(url: str) -> dict[str, float]:
    """The transformer's ``snapcat_transformer_stage_cpu_seconds_sum`` per stage, and its
    ``snapcat_predictor_images_total`` (as ``"photos"``)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    sums = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^snapcat_transformer_stage_cpu_seconds_sum\{stage="(\w+)"\} (\S+)$', text, re.M
        )
    }
    sums["photos"] = metric(text, "snapcat_predictor_images_total")
    return sums


def e2e_run(url: str, photos: list[bytes], concurrency: int, seconds: float, pids) -> dict:
    """One measurement through the transformer at ``url``; ``pids``: the server processes whose
    CPU is counted (the predictor's, then the transformer's)."""
    # Serialized once, as an app backend holding the photo's bytes would send them: the client's
    # own JSON encoding is not the stack's cost, and on 2 cores its CPU competes with the servers.
    bodies = [
        json.dumps(
            {"instances": [{"image_bytes": {"b64": base64.b64encode(p).decode("ascii")}}]}
        ).encode()
        for p in photos
    ]
    return post_run(url, bodies, concurrency, seconds, pids)


def post_run(url: str, bodies: list[bytes], concurrency: int, seconds: float, pids) -> dict:
    """``concurrency`` clients posting ``bodies`` (one photo each) to ``url``'s predict route
    back to back for ``seconds``; ``pids``: the server processes whose CPU is counted.

    Each client is the standard library's keep-alive ``http.client`` connection: its own cost
    per request (about 0.13 CPU-ms and 0.2 ms on a bare loopback server, against httpx's 0.4 and
    0.47) is the app backend's, not the stack's, so it is kept out of the latencies as far as a
    real client allows."""
    import http.client
    from urllib.parse import urlsplit

    headers = {"content-type": "application/json"}
    server = urlsplit(url)
    predict = f"/v1/models/{MODEL_NAME}:predict"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at, cpu_at_start = [0.0], [0.0]

    def start_clock() -> None:
        # Once every worker has warmed up (the first requests can take longer than a whole
        # measurement on a loaded machine), before any is released: the window and the CPU
        # baseline leave the warm-up out.
        cpu_at_start[:] = [process_cpu(p) for p in pids]
        stop_at[0] = time.perf_counter() + seconds

    start_gate = threading.Barrier(concurrency + 1, action=start_clock)

    def worker(offset: int) -> None:
        connection = http.client.HTTPConnection(server.hostname, server.port, timeout=120)

        def post(body: bytes) -> tuple[int, bytes]:
            connection.request("POST", predict, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()

        try:
            post(bodies[offset % len(bodies)])  # warm-up
            start_gate.wait()
            i = offset
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                status, content = post(bodies[i % len(bodies)])
                elapsed = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"HTTP {status}: {content[:200]!r}")
                i += concurrency
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    begin = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    cpu = [process_cpu(p) - at_start for p, at_start in zip(pids, cpu_at_start, strict=True)]
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ordered = sorted(latencies)
    return {
        "throughput": len(ordered) / wall,
        "p50": statistics.median(ordered) * 1000,
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000,
        "cpu_ms": sum(cpu) / len(ordered) * 1000,
        # per server process, in the order of ``pids``
        "cpu_ms_by_process": [c / len(ordered) * 1000 for c in cpu],
    }


def e2e_with_stages(url, photos, concurrency, seconds, pids) -> dict:
    """:func:`e2e_run` plus the transformer's CPU per photo by stage over the same window (the
    warm-up requests included: a few out of hundreds)."""
    before = stage_sums(url)
    result = e2e_run(url, photos, concurrency, seconds, pids)
    after = stage_sums(url)
    photos_done = after.pop("photos") - before.pop("photos")
    result["stages_ms"] = {
        stage: (after.get(stage, 0.0) - before.get(stage, 0.0)) / photos_done * 1000
        for stage in STAGES
    }
    return result


#: Batch sizes of the raw runs that bound concurrency 8 (the best of them is the limit).
RAW_BATCHES = (1, 8, 32)

#: The transformer's stages (serving.metrics.STAGES; not imported: it pulls in KServe).
STAGES = ("read_body", "decode", "normalize", "predictor_call", "response", "log")


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


_FROM_SOURCE_TREE = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if '__editable__' not in getattr(f, '__module__', '')]; "
    "runpy.run_module('serving', run_name='__main__', alter_sys=True)"
)


def start_baseline(src: str, stack, log_dir: str):
    """The transformer of source tree ``src`` against ``stack``'s predictor; (process, url)."""
    import subprocess

    from snapcat.local.processes import free_port, wait_http_ok
    from snapcat.local.stack import transformer_command

    port = free_port(stack.host)
    command = transformer_command(
        predictor_host=f"{stack.host}:{stack.predictor_port}",
        port=port,
        model_name=MODEL_NAME,
        host=stack.host,
        extra=("--enable_latency_logging=false",),
    )
    # ``python -m serving`` from ``src``: an editable install's import hook sits before
    # PYTHONPATH on sys.meta_path and would import this tree's serving/ and snapcat/ instead.
    assert command[1:3] == ["-m", "serving"], command
    command[1:3] = ["-c", _FROM_SOURCE_TREE]
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(Path(log_dir, "baseline-transformer.log"), "ab")  # noqa: SIM115
    process = subprocess.Popen(  # in ``src``: ``-c`` puts the working folder first on sys.path
        command, env=env, cwd=src, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://{stack.host}:{port}"
    wait_http_ok(f"{url}/v1/models/{MODEL_NAME}", 300, [process])
    return process, url


#: Environment variable naming the predictor's base URL for :func:`relay`.
RELAY_TO = "SERVING_BENCH_RELAY_TO"
_relay_session = None


async def relay(scope, receive, send) -> None:
    """ASGI app: the least any Python transformer does per request, on the transformer's own HTTP
    server (uvicorn, h11 parser, uvloop) and predictor client (a pooled aiohttp session): read
    the body, pass it to the predictor, answer with the predictor's reply. No JSON, no
    normalization, no KServe, limits or metrics: its CPU per photo is the floor under the
    transformer's "excluding normalization" figure."""
    global _relay_session
    import aiohttp

    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if _relay_session is None:
        _relay_session = aiohttp.ClientSession()
    async with _relay_session.request(
        scope["method"],
        os.environ[RELAY_TO] + scope["path"],
        data=b"".join(chunks),
        headers={"content-type": "application/json"},
    ) as response:
        status, content = response.status, await response.read()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": content})


def start_relay(stack, log_dir: str):
    """:func:`relay` in its own uvicorn process, in front of ``stack``'s predictor; (process, url)."""
    from snapcat.local.processes import free_port, spawn, wait_http_ok

    port = free_port(stack.host)
    command = [sys.executable, "-m", "uvicorn", "serving_bench:relay", "--app-dir"]
    command += [str(Path(__file__).parent), "--host", stack.host, "--port", str(port)]
    command += ["--http", "h11", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    upstream = {RELAY_TO: f"http://{stack.host}:{stack.predictor_port}"}
    process = spawn(command, Path(log_dir, "relay.log"), upstream)
    url = f"http://{stack.host}:{port}"
    wait_http_ok(f"{url}/v1/models/{MODEL_NAME}", 60, [process])
    return process, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="an exported model (default: an untrained one)")
    parser.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        help="of the untrained model (default: the CPU tier's EfficientNet-Lite0)",
    )
    parser.add_argument(
        "--image-size", type=int, help="of the untrained model (default: the backbone's)"
    )
    parser.add_argument("--photos", default=str(REPO_ROOT / "data" / "sample"))
    parser.add_argument("--num-photos", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--batching-parameters-file",
        default=str(REPO_ROOT / "manifests" / "base" / "tfserving" / "batching_parameters.txt"),
        help="TF Serving's batching parameters for the predictor (default: the base CPU sizing)",
    )
    parser.add_argument(
        "--baseline-src",
        help="a source tree whose transformer is measured too, against the same predictor",
    )
    args = parser.parse_args()

    import httpx

    from snapcat.contract.model_info import load_model_info
    from snapcat.contract.tf_serving_config import BatchingParameters
    from snapcat.imaging.normalize import normalize_image
    from snapcat.local.predictor import apply_tf_serving_threads
    from snapcat.local.processes import stop_process
    from snapcat.local.stack import LocalStack
    from snapcat.serve.transformer_core import TransformerCore
    from snapcat.train.export import ServingModel
    from snapcat.train.modeling import get_backbone

    batching = BatchingParameters.from_file(args.batching_parameters_file)
    print(
        f"batching: {os.path.relpath(batching.source, REPO_ROOT)}: max_batch_size "
        f"{batching.max_batch_size}, batch_timeout_micros {batching.batch_timeout_micros}, "
        f"num_batch_threads {batching.num_batch_threads}, max_enqueued_batches "
        f"{batching.max_enqueued_batches}, allowed_batch_sizes {list(batching.allowed_batch_sizes)}"
    )
    backbone = load_model_info(args.model_dir).backbone if args.model_dir else args.backbone
    # as the predictor sizes its own, before TensorFlow starts: the raw runs use the same pools
    threads = apply_tf_serving_threads(backbone=backbone)
    print(f"TensorFlow threads (predictor and raw runs): {threads}")
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))

    kinds = ("new", "base") if args.baseline_src else ("new",)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        image_size = args.image_size or get_backbone(args.backbone).default_size
        model_dir = args.model_dir or export_untrained(
            image_size, f"{tmp}/{MODEL_NAME}", args.backbone
        )
        model = ServingModel(model_dir)
        info = model.info
        photos = load_photos(Path(args.photos), args.num_photos)
        canonical = [normalize_image(p, info.spec) for p in photos]
        body = TransformerCore.predictor_body(canonical)
        # what the transformer sends the predictor for each photo, relayed by the floor run
        relay_bodies = [TransformerCore.predictor_body([c]) for c in canonical]
        print(
            f"model: {info.backbone} {info.image_size} px, {len(info.classes)} classes; "
            f"{os.cpu_count()} CPUs; {len(photos)} photos from {args.photos} "
            f"(mean {statistics.mean(map(len, photos)) / 1024:.0f} KB); "
            f"canonical JPEG mean {statistics.mean(map(len, canonical)) / 1024:.1f} KB, "
            f"{len(body) / len(canonical) / 1024:.1f} KB per image in the predictor request"
        )
        callers = batching.num_batch_threads
        runs: dict[str, list[dict]] = {"raw1": [], **{f"par{b}": [] for b in RAW_BATCHES}}
        for kind in (*kinds, "relay"):
            runs.update({f"{kind}{c}": [] for c in (1, 8)})
        baseline = None
        with LocalStack(
            model_dir,
            model_name=MODEL_NAME,
            log_dir=f"{tmp}/logs",
            transformer_args=("--enable_latency_logging=false",),
            batching_parameters_file=args.batching_parameters_file,
        ) as stack:
            urls = {"new": stack.url}
            pids = {"new": [stack.predictor.pid, stack.transformer.pid]}
            relay_process, relay_url = start_relay(stack, f"{tmp}/logs")
            relay_pids = [stack.predictor.pid, relay_process.pid]
            if args.baseline_src:
                baseline, urls["base"] = start_baseline(args.baseline_src, stack, f"{tmp}/logs")
                pids["base"] = [stack.predictor.pid, baseline.pid]
            try:
                for round_ in range(1, args.rounds + 1):
                    runs["raw1"].append(raw_run(model, canonical, 1, args.seconds))
                    for b in RAW_BATCHES:
                        runs[f"par{b}"].append(raw_run(model, canonical, b, args.seconds, callers))
                    line = f"raw b1 {runs['raw1'][-1]['throughput']:.1f}, {callers} callers b" + (
                        "/b".join(map(str, RAW_BATCHES))
                        + " "
                        + "/".join(f"{runs[f'par{b}'][-1]['throughput']:.1f}" for b in RAW_BATCHES)
                    )
                    # alternate which transformer goes first
                    for kind in kinds if round_ % 2 else kinds[::-1]:
                        for c in (1, 8):
                            r = e2e_with_stages(urls[kind], photos, c, args.seconds, pids[kind])
                            runs[f"{kind}{c}"].append(r)
                        line += f", {kind} c1/c8 " + "/".join(
                            f"{runs[f'{kind}{c}'][-1]['throughput']:.1f}" for c in (1, 8)
                        )
                    for c in (1, 8):
                        r = post_run(relay_url, relay_bodies, c, args.seconds, relay_pids)
                        runs[f"relay{c}"].append(r)
                    print(f"round {round_}: {line} img/s", flush=True)
                metrics = httpx.get(f"{stack.url}/metrics").text
            finally:
                for process in (baseline, relay_process):
                    if process is not None:
                        stop_process(process)
        # the predictor logs its batch statistics when it stops
        batch_log = [
            line
            for line in Path(tmp, "logs", "predictor.log").read_text().splitlines()
            if "batching:" in line
        ]
        per_image = metric(metrics, "snapcat_predictor_request_bytes_total") / metric(
            metrics, "snapcat_predictor_images_total"
        )

    def values(key: str, field: str) -> list[float]:
        return [r[field] for r in runs[key]]

    def med(key: str, field: str) -> float:
        return statistics.median(values(key, field))

    def spread(xs: list[float], digits: int = 2) -> str:
        return f"{statistics.median(xs):.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"

    print(
        f"--- medians (min-max) of {args.rounds} interleaved rounds, {args.seconds:g} s per "
        "measurement"
    )
    for key in ("raw1", *(f"par{b}" for b in RAW_BATCHES)):
        label = "1 caller,  batch  1" if key == "raw1" else f"{callers} callers, batch {key[3:]:>2}"
        print(
            f"raw SavedModel in-process, {label}:  {med(key, 'throughput'):6.2f} img/s"
            f"   {med(key, 'cpu_ms'):6.1f} CPU-ms/img   p50 {med(key, 'p50'):6.1f} ms per call"
        )
    best_raw = [min(r[f"par{b}"]["cpu_ms"] for b in RAW_BATCHES) for r in _by_round(runs)]
    best_raw_tp = [max(r[f"par{b}"]["throughput"] for b in RAW_BATCHES) for r in _by_round(runs)]
    for kind in kinds:
        name = {"new": "this tree", "base": f"baseline {args.baseline_src}"}[kind]
        print(f"--- end to end, transformer of {name}")
        for c in (1, 8):
            key = f"{kind}{c}"
            predictor_ms, transformer_ms = (
                statistics.median(r["cpu_ms_by_process"][i] for r in runs[key]) for i in (0, 1)
            )
            print(
                f"concurrency {c}: {med(key, 'throughput'):6.2f} img/s   "
                f"{med(key, 'cpu_ms'):6.1f} CPU-ms/img (predictor {predictor_ms:.1f} + "
                f"transformer {transformer_ms:.1f})   p50 {med(key, 'p50'):5.1f} ms   "
                f"p95 {med(key, 'p95'):5.1f} ms"
            )
            # With one request in flight every stage's clock is its own; with more, a stage that
            # awaits (the predictor call) also counts other requests' work: merged with "other".
            shown = STAGES if c == 1 else tuple(s for s in STAGES if s != "predictor_call")
            stages = {s: statistics.median(r["stages_ms"][s] for r in runs[key]) for s in shown}
            other = [
                r["cpu_ms_by_process"][1] - sum(r["stages_ms"][s] for s in shown) for r in runs[key]
            ]
            excl = [r["cpu_ms_by_process"][1] - r["stages_ms"]["normalize"] for r in runs[key]]
            print(
                "  transformer CPU-ms/photo by stage: "
                + ", ".join(f"{s} {v:.2f}" for s, v in stages.items())
                + (", other " if c == 1 else ", predictor_call + other ")
                + f"{statistics.median(other):.2f}; excluding normalization "
                + spread(excl)
                + " (target <= 3)"
            )
            raw_cpu = values("raw1", "cpu_ms") if c == 1 else best_raw
            raw_tp = values("raw1", "throughput") if c == 1 else best_raw_tp
            against = (
                "raw batch 1, 1 caller"
                if c == 1
                else f"the best raw batch size, {callers} callers (one per batch thread)"
            )
            by_cpu = [r / e for r, e in zip(raw_cpu, values(key, "cpu_ms"), strict=True)]
            by_tp = [e / r for r, e in zip(raw_tp, values(key, "throughput"), strict=True)]
            print(
                f"  ratio e2e/raw vs {against}: by CPU time per photo {spread(by_cpu)}, by "
                f"throughput {spread(by_tp)} (target >= 0.9)"
            )
        gap = [e - r for r, e in zip(values("raw1", "p50"), values(f"{kind}1", "p50"), strict=True)]
        print(
            f"  p50 at concurrency 1 minus raw batch-1 forward p50: {spread(gap, 1)} ms "
            "(target <= 5)"
        )
    print(
        "--- the floor of any Python transformer here: a relay on the transformer's HTTP server and "
        "predictor client that passes each photo's predictor body through and does nothing else"
    )
    for c in (1, 8):
        relay_ms = [r["cpu_ms_by_process"][1] for r in runs[f"relay{c}"]]
        predictor_ms = [r["cpu_ms_by_process"][0] for r in runs[f"relay{c}"]]
        normalize_ms = [r["stages_ms"]["normalize"] for r in runs[f"new{c}"]]
        raw_cpu = values("raw1", "cpu_ms") if c == 1 else best_raw
        # the best a transformer could reach: this relay, plus the normalization it must do
        ceiling = [
            raw / (r["cpu_ms"] + n)
            for raw, r, n in zip(raw_cpu, runs[f"relay{c}"], normalize_ms, strict=True)
        ]
        # what the predictor process alone leaves of the ratio (its HTTP front, batching threads)
        alone = [raw / p for raw, p in zip(raw_cpu, predictor_ms, strict=True)]
        print(
            f"concurrency {c}: relay {spread(relay_ms)} CPU-ms/photo, predictor "
            f"{statistics.median(predictor_ms):.1f} (raw/predictor alone {spread(alone)}); with "
            f"the transformer's normalization ({statistics.median(normalize_ms):.2f}), ratio "
            f"e2e/raw by CPU at best {spread(ceiling)}"
        )
    gap = [e - r for r, e in zip(values("raw1", "p50"), values("relay1", "p50"), strict=True)]
    print(
        f"  p50 at concurrency 1 minus raw batch-1 forward p50, through the relay: {spread(gap, 1)} ms"
    )
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(*batch_log[-1:], sep="\n")
    print(
        f"bytes per image sent to the predictor: {per_image / 1024:.1f} KB at {info.image_size} px "
        "(the transformer's counters; target <= 40 KB at 299 px)"
    )
    normalize_ms = (
        metric(metrics, "snapcat_normalize_seconds_sum")
        / metric(metrics, "snapcat_normalize_seconds_count")
        * 1000
    )
    print(f"normalization in the transformer: {normalize_ms:.1f} ms per image (its own histogram)")
    return 0


def _by_round(runs: dict[str, list[dict]]) -> list[dict[str, dict]]:
    """``runs`` regrouped per round: [{key: that round's result}]."""
    count = len(next(iter(runs.values())))
    return [{key: results[i] for key, results in runs.items()} for i in range(count)]


if __name__ == "__main__":
    sys.exit(main())
