"""Soak under attack: normal traffic at a steady rate while a hostile mix runs against the local
stack (``snapcat serve local``'s two processes), all on 127.0.0.1 and bounded in count and time.

The transformer runs with the capacity a pod gets from the base manifest's limits (CPU and
memory of the shipped InferenceService's transformer (``snapcat/data/kserve/``), translated to
``--max_photos_in_flight`` / ``--decode_budget_bytes`` as ``serving.capacity`` would compute them
from the cgroup). The hostile mix, one thread per kind, each capped:

- model repository ``unload`` / ``load`` calls (issue 10, finding 1);
- decode bombs: requests of 32 x a 3.9 KB lossless WebP of 16383 x 6100 (finding 2);
- ordinary large photos: 4000 x 3000 JPEGs, ``--big-concurrency`` at once (finding 3);
- requests to random model names (finding 4);
- unfinished 20 MB headers and bodies trickling in at a byte a second (finding 5);
- wrong content types, malformed JSON, V2 with a wrong shape, GET on ``:predict``, clients that
  disconnect mid-body (finding 6);

and the second round (issue 24):

- ``:explain`` requests with photos (they leaked photo slots) and chunked 80 MB bodies to it;
- progressive JPEGs (8000 x 8000, a few hundred KB, ~380 MiB of coefficients) and a 12 MP
  progressive file of 310 scans;
- 2,000 idle sockets and 1,100 slowloris sockets held through the attack;
- V2 binary-data requests, well-formed and malformed;
- (the 4000 x 3000 flood above now also reports its share of answered requests: an HTTP status,
  not a reset);
- after the soak, on their own: the feedback sink (a 300 MiB chunked event, six concurrent
  60 MiB events, malformed events) with its peak RSS against its manifest limit, and hostile
  PyTorch checkpoints (each must be refused, within seconds).

Every hostile kind prints its share of answered requests (an HTTP status rather than a reset or a
timeout). Prints the normal requests' outcome during the attack (share answered 200, share answered an honest
503, anything else), their p50/p99 latency, and the peak RSS of the transformer and the predictor.
Target: every normal request answered 200 or 503, transformer peak RSS under its manifest limit,
normal p99 under 2 s. The same normal traffic is first measured without an attack (the baseline):
on a machine shared with other work, that baseline says how much of the latency is the machine.

    .venv/bin/python benchmarks/soak.py                        # untrained Xception at 299 px
    .venv/bin/python benchmarks/soak.py --model-dir MODEL_DIR --duration 60
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import random
import socket
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
HOST = "127.0.0.1"  # never any other address
BOMB = REPO_ROOT / "tests" / "data" / "blank-16383x6100-lossless.webp"


def manifest_limits() -> tuple[float, int]:
    """The transformer container's CPU and memory limits in the base manifest."""
    from snapcat.rollout.render import shipped_inferenceservice

    document = shipped_inferenceservice()
    limits = document["spec"]["transformer"]["containers"][0]["resources"]["limits"]
    cpu = str(limits["cpu"])
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    memory = str(limits["memory"])
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return cpus, int(float(memory[:-2]) * units[memory[-2:]])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def v1_body(*photos: bytes) -> bytes:
    return json.dumps({"instances": [{"image_bytes": {"b64": b64(p)}} for p in photos]}).encode()


def big_jpeg() -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((4000, 3000), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


class PeakRss:
    """Samples the RSS of some processes every 50 ms; ``peak[name]`` in bytes."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, process in self.processes.items():
                with contextlib.suppress(Exception):
                    self.peak[name] = max(self.peak[name], process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------------- attacks
class Attack:
    """The hostile mix; every kind is bounded in count and stops at ``deadline``."""

    def __init__(self, port: int, deadline: float, big_concurrency: int):
        import httpx

        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.deadline = deadline
        self.big_concurrency = big_concurrency
        self.counts: dict[str, dict[int, int]] = {}
        self.lock = threading.Lock()
        self.httpx = httpx

    def _count(self, kind: str, status: int) -> None:
        with self.lock:
            self.counts.setdefault(kind, {})
            self.counts[kind][status] = self.counts[kind].get(status, 0) + 1

    def _post(self, client, kind: str, path: str, content: bytes, headers=None) -> int:
        try:
            response = client.post(
                f"{self.url}{path}",
                content=content,
                headers=headers or {"content-type": "application/json"},
            )
            status = response.status_code
        except self.httpx.HTTPError:
            status = -1
        self._count(kind, status)
        return status

    def _loop(self, kind: str, limit: int, once, rate: float | None = None) -> None:
        """``once`` up to ``limit`` times until the deadline, at most ``rate`` per second."""
        with self.httpx.Client(timeout=30) as client:
            start = time.monotonic()
            for i in range(limit):
                if time.monotonic() > self.deadline:
                    return
                if rate:
                    time.sleep(max(0.0, start + i / rate - time.monotonic()))
                once(client, i)

    def management(self) -> None:
        def once(client, i):
            verb = "unload" if i % 2 == 0 else "load"
            self._post(client, "unload/load", f"/v2/repository/models/{MODEL_NAME}/{verb}", b"")
            time.sleep(0.2)

        self._loop("unload/load", 50, once)

    def bombs(self) -> None:
        body = v1_body(*[BOMB.read_bytes()] * 32)
        predict = f"/v1/models/{MODEL_NAME}:predict"
        self._loop(
            "decode bomb x32", 40, lambda c, i: self._post(c, "decode bomb x32", predict, body)
        )

    def big_photos(self) -> None:
        body = v1_body(big_jpeg())
        predict = f"/v1/models/{MODEL_NAME}:predict"
        per_thread = max(1, 192 // self.big_concurrency)

        def once(client, i):
            # A busy day, not an attacker: a client told 503 + Retry-After waits before retrying.
            if self._post(client, "4000x3000 JPEG", predict, body) == 503:
                time.sleep(1.0)

        def worker(_):
            self._loop("4000x3000 JPEG", per_thread, once)

        with concurrent.futures.ThreadPoolExecutor(self.big_concurrency) as pool:
            list(pool.map(worker, range(self.big_concurrency)))

    def random_models(self) -> None:
        body = v1_body(b"\xff\xd8 not a photo")

        def once(client, i):
            name = f"m{random.getrandbits(48):x}"
            self._post(client, "random model name", f"/v1/models/{name}:predict", body)

        self._loop("random model name", 6000, once, rate=100)

    def malformed(self) -> None:
        predict = f"/v1/models/{MODEL_NAME}:predict"
        infer = f"/v2/models/{MODEL_NAME}/infer"
        shape = json.dumps(
            {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [9], "data": ["x"]}]}
        ).encode()

        def once(client, i):
            case = i % 4
            if case == 0:
                self._post(client, "malformed", predict, b"a=b", {"content-type": "text/plain"})
            elif case == 1:
                self._post(client, "malformed", predict, b"{bad json")
            elif case == 2:
                self._post(client, "malformed", infer, shape)
            else:
                try:
                    self._count("malformed", client.get(f"{self.url}{predict}").status_code)
                except self.httpx.HTTPError:
                    self._count("malformed", -1)

        self._loop("malformed", 1000, once, rate=20)

    def _socket(self, payload: bytes) -> socket.socket | None:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=5)
            sock.sendall(payload)
            return sock
        except OSError:
            return None

    def slow_clients(self) -> None:
        """30 connections each sending an endless header, 10 trickling a body, 20 that hang
        up mid-body; each stops at the deadline or when the server closes it."""
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Fill: "
        body_head = (
            f"POST /v1/models/{MODEL_NAME}:predict HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        ).encode()
        for _ in range(20):
            sock = self._socket(body_head + b'{"instances": [')
            if sock:
                sock.close()
                self._count("disconnect mid-body", 0)
        headers = [s for s in (self._socket(head) for _ in range(30)) if s]
        trickles = [s for s in (self._socket(body_head) for _ in range(10)) if s]
        sent = 0
        while time.monotonic() < self.deadline and (headers or trickles) and sent < 20 * 2**20:
            for sock in list(headers):
                try:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
                except OSError:
                    headers.remove(sock)
                    self._count("20 MB header", self._status(sock))
            for sock in list(trickles):
                try:
                    sock.sendall(b"{")
                except OSError:
                    trickles.remove(sock)
                    self._count("1 byte/s body", self._status(sock))
            time.sleep(1.0)
        for sock in headers + trickles:
            sock.close()

    @staticmethod
    def _status(sock: socket.socket) -> int:
        try:
            sock.settimeout(1)
            line = sock.recv(64).split(b" ")
            return int(line[1]) if len(line) > 1 else 0
        except (OSError, ValueError):
            return 0
        finally:
            sock.close()

    # ----------------------------------------------------------------- second round (issue 24)
    def explain(self) -> None:
        body = v1_body(big_jpeg()[:200_000] + b"\xff\xd9")
        explain = f"/v1/models/{MODEL_NAME}:explain"
        chunk = b" " * 2**20

        def once(client, i):
            if i % 10 == 9:  # a chunked 80 MB body: 413 while it streams (was: accepted whole)
                stream = (chunk for _ in range(80))
                self._post(client, ":explain chunked 80 MB", explain, stream)
            else:
                self._post(client, ":explain", explain, body)

        self._loop(":explain", 300, once, rate=10)

    def progressive(self) -> None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8000, 8000), (120, 130, 140)).save(
            buffer, "JPEG", quality=50, progressive=True, subsampling=0
        )
        huge = v1_body(buffer.getvalue())
        sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
        from decode_cost_bench import many_scans

        noise = Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3)).resize((4000, 3000))
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG", quality=90, progressive=True)
        scans = v1_body(many_scans(buffer.getvalue(), 300))
        predict = f"/v1/models/{MODEL_NAME}:predict"

        def once(client, i):
            if i % 2:
                self._post(client, "progressive 8000x8000", predict, huge)
            else:
                self._post(client, "310-scan 12 MP JPEG", predict, scans)

        self._loop("progressive", 60, once, rate=2)

    def idle_sockets(self) -> None:
        """2,000 sockets that send nothing and 1,100 that send a request head a line a second,
        held (and reopened when the server closes them) until the deadline."""
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 4000 if hard == resource.RLIM_INFINITY else min(4000, hard)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        idle = [s for s in (self._socket(b"") for _ in range(2000)) if s]
        slow = [s for s in (self._socket(b"POST / HTTP/1.1\r\n") for _ in range(1100)) if s]
        self._count("idle sockets opened", len(idle))
        self._count("slowloris sockets opened", len(slow))
        closed = 0
        while time.monotonic() < self.deadline:
            for sock in list(slow):
                try:
                    sock.sendall(b"X-a: b\r\n")
                except OSError:
                    slow.remove(sock)
                    closed += 1
            time.sleep(1.0)
        self._count("slowloris closed by server", closed)
        for sock in idle + slow:
            sock.close()

    def v2_binary(self) -> None:
        import struct

        photo = big_jpeg()[:300_000] + b"\xff\xd9"
        raw = struct.pack("<I", len(photo)) + photo
        infer = f"/v2/models/{MODEL_NAME}/infer"

        def request(size: int, shape: list[int], header: str | None = None):
            document = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": shape,
                                    "parameters": {"binary_data_size": size}}]}  # fmt: skip
            head = json.dumps(document).encode()
            headers = {"content-type": "application/octet-stream",
                       "inference-header-content-length": header or str(len(head))}  # fmt: skip
            return head + raw, headers

        cases = [request(len(raw), [1]), request(-5, [1]), request(len(raw), [3]),
                 request(len(raw), [1], "abc")]  # fmt: skip

        def once(client, i):
            body, headers = cases[i % len(cases)]
            kind = "V2 binary ok" if i % len(cases) == 0 else "V2 binary malformed"
            self._post(client, kind, infer, body, headers)

        self._loop("V2 binary", 200, once, rate=5)

    def run(self) -> dict[str, dict[int, int]]:
        threads = [
            threading.Thread(target=target, daemon=True)
            for target in (
                self.management,
                self.bombs,
                self.big_photos,
                self.random_models,
                self.malformed,
                self.slow_clients,
                self.explain,
                self.progressive,
                self.idle_sockets,
                self.v2_binary,
            )
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(1.0, self.deadline + 30 - time.monotonic()))
        return self.counts


def run_attack(port: int, deadline_in: float, big_concurrency: int, queue) -> None:
    """In its own process, so the attack's threads do not slow the normal traffic's client."""
    attack = Attack(port, time.monotonic() + deadline_in, big_concurrency)
    queue.put(attack.run())


# --------------------------------------------------------------------------------- normal traffic
def normal_traffic(url: str, photos: list[bytes], rate: float, stop_at: float) -> list[tuple]:
    """One photo per request at ``rate`` requests per second (open loop: a slow answer does not
    delay the next request); returns (start, status, seconds) per request."""
    import httpx

    bodies = [v1_body(p) for p in photos]
    results: list[tuple] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        start = time.monotonic()
        try:
            with httpx.Client(timeout=30) as client:
                status = client.post(
                    f"{url}/v1/models/{MODEL_NAME}:predict",
                    content=bodies[i % len(bodies)],
                    headers={"content-type": "application/json"},
                ).status_code
        except httpx.HTTPError:
            status = -1
        with lock:
            results.append((start, status, time.monotonic() - start))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        i = 0
        next_at = time.monotonic()
        while next_at < stop_at:
            time.sleep(max(0.0, next_at - time.monotonic()))
            pool.submit(one, i)
            i += 1
            next_at += 1.0 / rate
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="exported model (default: an untrained one)")
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of attack")
    parser.add_argument("--baseline", type=float, default=15.0, help="seconds without attack")
    parser.add_argument("--rate", type=float, default=2.0, help="normal requests per second")
    parser.add_argument("--big-concurrency", type=int, default=64)
    parser.add_argument("--photos", default=str(REPO_ROOT / "data" / "sample"))
    parser.add_argument(
        "--pin", action="store_true", help="transformer on CPU 0, everything else elsewhere"
    )
    parser.add_argument("--log-dir", help="keep the servers' logs here (default: discarded)")
    args = parser.parse_args()
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be within 1..600 s")

    from serving.capacity import plan_capacity
    from snapcat.local.stack import LocalStack
    from snapcat.serve.container_limits import ContainerLimits

    cpus, memory = manifest_limits()
    capacity = plan_capacity(ContainerLimits(cpus=cpus, memory_bytes=memory))
    photos = [p.read_bytes() for p in sorted(Path(args.photos).glob("*/*.jpg"))[:40]]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if not model_dir:
            from serving_bench import export_untrained

            model_dir = export_untrained(args.image_size, f"{tmp}/{MODEL_NAME}")
        stack = LocalStack(
            model_dir,
            host=HOST,
            log_dir=args.log_dir or tmp,
            transformer_args=(
                f"--max_photos_in_flight={capacity.max_photos}",
                f"--decode_budget_bytes={capacity.decode_budget_bytes}",
                "--enable_latency_logging=false",
            ),
        )
        with stack:
            url = stack.url
            if args.pin:
                # The transformer gets CPU 0 (its manifest limit is 1 CPU); the predictor, the
                # attackers and the normal clients share the others.
                os.sched_setaffinity(stack.transformer.pid, {0})
                rest = set(range(1, os.cpu_count() or 2)) or {0}
                os.sched_setaffinity(stack.predictor.pid, rest)
                os.sched_setaffinity(0, rest)
            # warm-up (both servers load everything), then the baseline: the same normal traffic
            # without an attack, on this machine as loaded as it is now
            normal_traffic(url, photos, args.rate, time.monotonic() + 3)
            quiet = normal_traffic(url, photos, args.rate, time.monotonic() + args.baseline)
            with PeakRss(
                {"transformer": stack.transformer.pid, "predictor": stack.predictor.pid}
            ) as rss:
                time.sleep(0.2)
                baseline = {k: p.memory_info().rss for k, p in rss.processes.items()}
                attack_start = time.monotonic()
                deadline = attack_start + args.duration
                context = multiprocessing.get_context("spawn")
                queue = context.Queue()
                attacker = context.Process(
                    target=run_attack, args=(stack.port, args.duration, args.big_concurrency, queue)
                )
                attacker.start()
                results = normal_traffic(url, photos, args.rate, deadline)
                counts = queue.get(timeout=120)
                attacker.join(30)
                attack_end = time.monotonic()
            still_alive = stack.alive()

    during = [r for r in results if attack_start <= r[0] <= attack_end]
    statuses = [r[1] for r in during]
    ok = [r[2] for r in during if r[1] == 200]
    answered = [r[2] for r in during if r[1] in (200, 503)]
    other = sorted({s for s in statuses if s not in (200, 503)})
    p99 = percentile(answered, 0.99)
    print(f"transformer capacity from the base manifest ({cpus:g} CPU, {memory / 2**30:g} GiB):")
    print(
        f"  {capacity.max_photos} photos in flight, decode budget "
        f"{capacity.decode_budget_bytes / 2**20:.0f} MB, {capacity.workers} normalization threads"
    )
    print(f"attack: {args.duration:g} s; hostile requests by kind and status:")
    for kind, by_status in counts.items():
        line = ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items()))
        if "opened" in kind or "closed" in kind:
            print(f"  {kind:26s} {sum(s * n for s, n in by_status.items())}")
            continue
        if kind == "disconnect mid-body":  # the client hangs up: no answer to read
            print(f"  {kind:26s} {line}")
            continue
        total = sum(by_status.values())
        got_status = sum(n for s, n in by_status.items() if s > 0)
        print(f"  {kind:26s} {line}  (answered {got_status / max(1, total):.1%})")
    quiet_ok = [r[2] for r in quiet if r[1] == 200]
    print(
        f"baseline without attack: {len(quiet)} normal requests, "
        f"{len(quiet_ok) / max(1, len(quiet)):.1%} answered 200, p50 "
        f"{statistics.median(quiet_ok) if quiet_ok else 0:.2f} s, p99 "
        f"{percentile(quiet_ok, 0.99):.2f} s"
    )
    print(f"normal requests during the attack: {len(during)} at {args.rate:g}/s")
    print(
        f"  200: {len(ok) / max(1, len(during)):.1%}  honest 503: "
        f"{statuses.count(503) / max(1, len(during)):.1%}  other: {other or 'none'}"
    )
    print(
        f"  latency p50 {statistics.median(answered) if answered else 0:.2f} s, "
        f"p99 {p99:.2f} s, max {max(answered, default=0):.2f} s"
    )
    print(
        f"peak RSS: transformer {rss.peak['transformer'] / 2**20:.0f} MiB "
        f"(before the attack {baseline['transformer'] / 2**20:.0f} MiB; manifest limit "
        f"{memory / 2**20:.0f} MiB), predictor {rss.peak['predictor'] / 2**20:.0f} MiB "
        f"(before {baseline['predictor'] / 2**20:.0f} MiB)"
    )
    met = (
        bool(during)
        and not other
        and rss.peak["transformer"] < memory
        and p99 < 2.0
        and still_alive
    )
    print(
        f"target (all 200/503, transformer RSS < limit, p99 < 2 s, both alive): "
        f"{'MET' if met else 'NOT MET'}"
    )
    sink_met = sink_attack()
    checkpoints_met = checkpoint_attack()
    return 0 if met and sink_met and checkpoints_met else 1


# --------------------------------------------------------------------------------- feedback sink
def sink_manifest_memory() -> int:
    import yaml

    document = yaml.safe_load(
        (REPO_ROOT / "manifests" / "feedback" / "deployment.yaml").read_text()
    )
    memory = document["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    return int(float(memory[:-2]) * {"Mi": 2**20, "Gi": 2**30}[memory[-2:]])


def sink_attack() -> bool:
    """The feedback sink alone: a 300 MiB chunked event, six concurrent 60 MiB events and
    malformed events; peak RSS against the manifest's limit, and every answer an HTTP status
    below 500."""
    import httpx
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    from snapcat.local.processes import free_port, wait_http_ok

    def headers() -> dict:
        attributes = {"id": os.urandom(8).hex(), "type": "org.kubeflow.serving.inference.request",
                      "source": "soak", "datacontenttype": "application/json"}  # fmt: skip
        return dict(to_binary(CloudEvent(attributes, b"{}"))[0])

    from snapcat.contract.prediction_signing import write_key_folder
    from snapcat.feedback.access import write_token_file

    port, logger_port = free_port(), free_port()
    url = f"http://{HOST}:{logger_port}"  # the attack comes in where KServe's logger posts
    limit = sink_manifest_memory()
    with tempfile.TemporaryDirectory() as tmp:
        import subprocess

        keys = write_key_folder(f"{tmp}/keys")
        token = write_token_file(f"{tmp}/token")

        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snapcat.cli",
                "feedback",
                "serve",
                "--store",
                f"{tmp}/store",
                "--host",
                HOST,
                "--port",
                str(port),
                "--logger-port",
                str(logger_port),
                "--keys",
                str(keys),
                "--token-file",
                str(token),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http_ok(f"http://{HOST}:{port}/healthz", 60, [process])
            statuses: dict[str, list[int]] = {}

            def post(kind: str, content, timeout: float = 120) -> None:
                try:
                    status = httpx.post(url, content=content, headers=headers(), timeout=timeout)
                    statuses.setdefault(kind, []).append(status.status_code)
                except httpx.HTTPError:
                    statuses.setdefault(kind, []).append(-1)

            with PeakRss({"sink": process.pid}) as rss:
                time.sleep(0.2)
                before = rss.peak["sink"]
                chunk = b" " * 2**20
                post("300 MiB chunked", (chunk for _ in range(300)))
                sixty = b'{"instances": [' + b" " * (60 * 2**20) + b"]}"
                with concurrent.futures.ThreadPoolExecutor(6) as pool:
                    list(pool.map(lambda _: post("6 x 60 MiB at once", sixty), range(6)))
                for body in (b"[" * 100_000, b'{"inputs": [{"name": "image_bytes", "data": 7}]}',
                             b'{"instances": [7]}', b'{"predictions": [{"categories": [3]}]}'):  # fmt: skip
                    post("malformed", body, 30)
        finally:
            process.terminate()
            process.wait(30)
    print(f"feedback sink (manifest limit {limit / 2**20:.0f} MiB):")
    for kind, codes in statuses.items():
        answered = sum(1 for c in codes if c > 0) / len(codes)
        print(f"  {kind:22s} {sorted(codes)}  (answered {answered:.0%})")
    peak = rss.peak["sink"]
    print(f"  peak RSS {peak / 2**20:.0f} MiB (before {before / 2**20:.0f} MiB)")
    all_codes = [c for codes in statuses.values() for c in codes]
    met = peak < limit and all(0 < c < 500 or c == 503 for c in all_codes)
    print(
        f"  target (RSS < limit, every answer < 500 or an honest 503): {'MET' if met else 'NOT MET'}"
    )
    return met


# --------------------------------------------------------------------------------- checkpoints
_CHECKPOINT_ATTACK = """
import sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_torch_checkpoint import _int, _text, _tuple, legacy, state_dict, tensor
from pathlib import Path
from snapcat.train.torch_checkpoint import CheckpointError, read_state_dict
tmp = Path({tmp!r})
laughs = _tuple(_text("lol")) + b"q\\x00" + b"h\\x00h\\x00\\x86q\\x00" * 60
cases = {{
    "stride 2^40": state_dict((_text("w"), tensor((2,), (2**40,)))),
    "tensor past its storage": state_dict((_text("w"), tensor((4_000_000,), (1,)))),
    "billion laughs key": b"\\x80\\x02}}" + laughs + b"K\\x01s.",
    "BUILD on a reader class": b"\\x80\\x02ctorch._utils\\n_rebuild_tensor_v2\\nN}}"
        + _text("__init__") + b"Ns\\x86b.",
}}
for name, tree in cases.items():
    start = time.monotonic()
    try:
        read_state_dict(legacy(tmp / "c.pth", tree))
        outcome = "READ (not refused)"
    except CheckpointError:
        outcome = "refused"
    print(f"{{name}}|{{outcome}}|{{(time.monotonic() - start) * 1000:.0f}}")
"""


def checkpoint_attack() -> bool:
    """Hostile PyTorch checkpoints, each in a child process with a time limit (a crash or a hang
    is a failure, not the benchmark's end)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        code = _CHECKPOINT_ATTACK.format(
            root=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"), tmp=tmp
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
            )
            lines, rc = done.stdout.splitlines(), done.returncode
        except subprocess.TimeoutExpired:
            lines, rc = [], "timeout"
    print("hostile PyTorch checkpoints:")
    for line in lines:
        name, outcome, ms = line.split("|")
        print(f"  {name:26s} {outcome} in {ms} ms")
    met = rc == 0 and len(lines) == 4 and all("|refused|" in line for line in lines)
    print(f"  target (every one refused, no crash or hang): {'MET' if met else f'NOT MET ({rc})'}")
    return met


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
