"""The serving benchmarks still run and print every figure they promise (``make bench`` is not part
of CI): each script at its smallest settings, in a subprocess as a person runs it. The figures
themselves are not judged here (speed is read from a benchmark's output, never asserted)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.long]


def run_benchmark(script: str, *args: str, timeout: int = 600) -> str:
    ran = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-4000:]
    return ran.stdout


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*(-?[\d.]+)", text)
    assert match, f"no {label!r} in:\n{text[-3000:]}"
    return float(match.group(1))


def test_serving_bench_prints_the_stack_and_its_floor():
    out = run_benchmark(
        "serving_bench.py", "--rounds", "1", "--seconds", "0.5", "--num-photos", "8"
    )
    end_to_end = out.split("--- end to end")[1]
    assert "concurrency 1:" in end_to_end and "concurrency 8:" in end_to_end
    ratios = [float(x) for x in re.findall(r"by CPU time per photo ([\d.]+)", out)]
    floors = [float(x) for x in re.findall(r"ratio e2e/raw by CPU at best ([\d.]+)", out)]
    assert len(ratios) == 2 and len(floors) == 2, out
    assert all(math.isfinite(x) and 0 < x < 5 for x in ratios + floors), out
    # both the relay and the transformer were measured (their CPU read from /proc)
    relay = number_after("concurrency 1: relay", out)
    transformer = number_after("+ transformer", out)
    assert relay > 0 and transformer > 0
    assert "through the relay:" in out and "bytes per image sent to the predictor" in out


def test_warmup_bench_compares_the_three_exports():
    out = run_benchmark(
        "warmup_bench.py", "--backbone", "efficientnet-lite0", "--image-size", "96", "--rounds", "1"
    )
    for variant in ("with warm-up records", "predict records only", "without"):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{variant}:"))
        assert number_after("first explain of 1 photo", line) > 0, line
