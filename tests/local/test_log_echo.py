"""``snapcat serve local``'s terminal: warnings and errors from the servers' log files, not every
start-up and per-request line (``-v``: all of them)."""

from __future__ import annotations

import io

from snapcat.local.log_echo import LogEcho, noteworthy

LINES = [
    'INFO:     127.0.0.1:5000 - "POST /v1/models/listing-category:predict HTTP/1.1" 200 OK',
    "2026-12-07 03:00:00.123 12 kserve.trace requestId: x, preprocess_ms: 1.2",
    "I0000 00:00:1796612360.689196   25259 port.cc:153] oneDNN custom operations are on.",
    "WARNING snapcat.serving: refused request: 413 too-large",
    "2026-12-07 03:00:01 ERROR kserve: predictor unavailable",
    "W0000 00:00:1796612360.7 1 cpu_feature_guard.cc:1] AVX512 not used",
    "Traceback (most recent call last):",
    '  File "serving/transformer.py", line 3, in predict',
    "ValueError: boom",
]


def test_only_warnings_errors_and_tracebacks_are_noteworthy():
    assert [noteworthy(line) for line in LINES] == [False, False, False] + [True] * 6


def test_the_echo_follows_files_from_their_end(tmp_path):
    log = tmp_path / "transformer.log"
    log.write_text("WARNING before the banner: already in the file, not echoed again\n")
    out = io.StringIO()
    echo = LogEcho([log, tmp_path / "predictor.log"], out=out, poll=0.01).start()
    with open(log, "a") as handle:
        handle.write("\n".join(LINES) + "\n" + "WARNING half a line")
    echo.stop()
    shown = out.getvalue().splitlines()
    assert shown[0] == "[transformer] WARNING snapcat.serving: refused request: 413 too-large"
    assert len(shown) == 6 and "already in the file" not in out.getvalue()
    assert not any("half a line" in line for line in shown)  # waits for its newline


def test_verbose_echoes_every_line(tmp_path):
    log = tmp_path / "predictor.log"
    out = io.StringIO()
    echo = LogEcho([log], verbose=True, out=out, poll=0.01).start()
    log.write_text("\n".join(LINES) + "\n")
    echo.stop()
    assert len(out.getvalue().splitlines()) == len(LINES)
