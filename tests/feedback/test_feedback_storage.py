"""Issue 25, finding 2: the sink's storage is bounded. Not-an-image bytes are refused, a full
store answers 507 and fails readiness while everything stored before stays whole, a full volume
(``ENOSPC``) leaves no partial file, and a caller past its rate gets 429. Real processes on
127.0.0.1 except the ``ENOSPC`` case (a full disk cannot be made safely in a test)."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import uuid

import httpx
import pytest
from _feedback_fixtures import Sink, logger_event
from conftest import make_image_bytes

from snapcat.feedback.events import REQUEST_TYPE, RESPONSE_TYPE
from snapcat.feedback.store import FeedbackStore, NotAnImage, StoreFull

pytestmark = pytest.mark.timeout(300)
TOP = ["digital-devices", "home-appliances", "furniture-interior"]


def _request(photos: list[bytes]) -> dict:
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(p).decode()}} for p in photos]}


def _response(pid: str, version: str) -> dict:
    categories = [{"slug": s, "label": s, "score": 0.3} for s in TOP]
    return {"predictions": [{"prediction_id": pid, "categories": categories}],
            "model_version": version}  # fmt: skip


def test_a_full_store_answers_507_fails_readiness_and_loses_nothing(tmp_path):
    """Was: any bytes kept as photos without bound; a full volume answered 500 with a traceback
    while /healthz stayed 200, and photo and response events were lost."""
    photos = [make_image_bytes(seed=700 + i) for i in range(12)]
    quota = sum(len(p) for p in photos[:4]) + len(photos[4]) // 2  # room for four photos
    s = Sink(tmp_path / "store", tmp_path / "sink.log",
             extra=("--max-photo-bytes", str(quota), "--max-predictions-per-version", "6"))  # fmt: skip
    s.start()
    try:
        assert httpx.get(f"{s.url}/readyz").json() == {"status": "ready"}
        junk = logger_event(s.logger_url, REQUEST_TYPE, "junk", _request([os.urandom(4096)]))
        assert junk.status_code == 400 and "not a photo" in junk.json()["error"]
        stored, statuses = [], []
        for photo in photos:
            call = str(uuid.uuid4())
            answer = logger_event(s.logger_url, REQUEST_TYPE, call, _request([photo]))
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                stored.append(photo)
            else:
                assert answer.status_code == 507, answer.text
                assert answer.json()["error"].startswith("the feedback store is full")
                assert "Traceback" not in answer.text
        assert statuses[:4] == [200] * 4 and set(statuses[4:]) == {507}
        assert httpx.get(f"{s.url}/readyz").status_code == 503
        assert httpx.get(f"{s.url}/healthz").status_code == 200  # alive: not restarted
        # The per-version quota: six predictions of version 9, then 507.
        answers = [
            logger_event(
                s.logger_url, RESPONSE_TYPE, str(uuid.uuid4()), _response(s.sign("9", TOP), "9")
            ).status_code  # fmt: skip
            for _ in range(8)
        ]
        assert answers == [200] * 6 + [507] * 2
    finally:
        s.kill()
    # Nothing stored before is lost or partial: every photo file hashes to its name.
    files = [p for p in (s.store / "photos").rglob("*") if p.is_file()]
    assert sorted(p.read_bytes() for p in files) == sorted(stored)
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in files)
    assert not [p for p in files if p.name.startswith(".incoming-")]


def test_a_caller_past_its_rate_gets_429(tmp_path):
    s = Sink(tmp_path / "store", tmp_path / "sink.log",
             extra=("--rate-limit", "0.5", "--burst", "3")).start()  # fmt: skip
    try:
        statuses = [
            httpx.put(
                f"{s.url}/v1/feedback/{s.sign('1', TOP)}",
                json={"category": "beauty"},
                headers=s.auth,
            ).status_code  # fmt: skip
            for _ in range(6)
        ]
        assert statuses[:3] == [404] * 3 and set(statuses[3:]) == {429}
    finally:
        s.kill()


@pytest.mark.parametrize("trusted", [True, False])
def test_callers_behind_a_trusted_proxy_have_their_own_budget(tmp_path, trusted):
    """Through a proxy in ``--forwarded-allow-ips`` each caller its ``X-Forwarded-For`` names
    has its own budget; from a peer not in it the header is ignored (anyone could send one),
    and every request counts against the peer's address."""
    proxies = "127.0.0.1" if trusted else "192.0.2.9"
    s = Sink(tmp_path / "store", tmp_path / "sink.log",
             extra=("--rate-limit", "0.5", "--burst", "2", "--forwarded-allow-ips", proxies))  # fmt: skip
    s.start()
    try:

        def put(caller: str) -> int:
            headers = {**s.auth, "x-forwarded-for": caller}
            url = f"{s.url}/v1/feedback/{s.sign('1', TOP)}"
            return httpx.put(url, json={"category": "beauty"}, headers=headers).status_code

        first = [put("203.0.113.1") for _ in range(3)]
        second = [put("203.0.113.2") for _ in range(2)]
        assert first == [404, 404, 429]  # 404: an unknown prediction, past the limiter
        assert second == ([404, 404] if trusted else [429, 429])
    finally:
        s.kill()


def test_a_full_volume_leaves_no_partial_photo(tmp_path, monkeypatch):
    store = FeedbackStore(tmp_path / "store")
    try:
        first = make_image_bytes(seed=1)
        store.add_request("a", [first])
        real_fsync = os.fsync

        def disk_full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", disk_full)
        with pytest.raises(StoreFull, match="volume is full"):
            store.add_request("b", [make_image_bytes(seed=2)])
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert store.fullness() == "the volume is full"
        files = [p for p in store.photos_dir.rglob("*") if p.is_file()]
        assert [p.read_bytes() for p in files] == [first]  # no .incoming- leftover
        with pytest.raises(NotAnImage, match="photo 0"):
            store.add_request("c", [b"GIF89a not really"])
    finally:
        store.close()
