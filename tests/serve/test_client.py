"""The Python client and the ``snapcat classify`` table, against a fake server (httpx.MockTransport);
tests/serve/test_serving_e2e.py runs both against the real servers."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from conftest import make_image_bytes

from snapcat.commands.classify import _width, format_table
from snapcat.serve.client import (
    Category,
    Prediction,
    SnapcatClient,
    SnapcatConnectionError,
    SnapcatServerError,
)


def fake_server(seen: list[dict], status: int = 200, body: dict | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"name": "listing-category", "ready": True})
        payload = json.loads(request.content)
        seen.append({"url": str(request.url), "payload": payload})
        if body is not None:
            return httpx.Response(status, json=body)
        predictions = [
            {
                "categories": [
                    {"slug": "womens-clothing", "label": "여성의류", "score": 0.81},
                    {"slug": "beauty", "label": "뷰티/미용", "score": 0.1},
                ],
                "confident": True,
            }
            for _ in payload["instances"]
        ]
        return httpx.Response(200, json={"predictions": predictions, "model_version": "42"})

    return httpx.MockTransport(handler)


def test_classify_sends_photos_as_v1_b64_and_parses_predictions(tmp_path):
    photo = make_image_bytes("PNG", seed=1)
    path = tmp_path / "a.png"
    path.write_bytes(photo)
    seen: list[dict] = []
    with SnapcatClient(
        "127.0.0.1:8080/", "my-model", transport=fake_server(seen), max_batch=2
    ) as client:
        predictions = client.classify([path, str(path), photo])
    assert [s["url"] for s in seen] == ["http://127.0.0.1:8080/v1/models/my-model:predict"] * 2
    sent = [i["image_bytes"]["b64"] for s in seen for i in s["payload"]["instances"]]
    assert [base64.b64decode(s) for s in sent] == [photo] * 3
    assert len(predictions) == 3
    assert predictions[0] == Prediction(
        (Category("womens-clothing", "여성의류", 0.81), Category("beauty", "뷰티/미용", 0.1)),
        "42",
        confident=True,
    )
    # a server from before the field existed: not sure, so the app shows the full picker
    old = Prediction.from_dict({"categories": [{"slug": "a", "label": "A", "score": 0.9}]})
    assert old.confident is False
    assert predictions[2].top.label == "여성의류"


def test_classify_one_and_ready():
    client = SnapcatClient("http://x", transport=fake_server([]))
    assert client.classify_one(b"photo").top.slug == "womens-clothing"
    assert client.ready()


def test_server_errors_carry_the_servers_message():
    error = {
        "error": "instance 0: corrupt: the JPEG file is truncated or damaged",
        "errors": [{"instance": 0, "reason": "corrupt", "message": "..."}],
    }
    client = SnapcatClient("http://x", transport=fake_server([], 400, error))
    with pytest.raises(SnapcatServerError) as caught:
        client.classify([b"broken"])
    assert caught.value.status_code == 400
    assert caught.value.message == error["error"]
    assert caught.value.errors[0]["reason"] == "corrupt"
    assert "HTTP 400: instance 0: corrupt" in str(caught.value)


def test_non_json_error_body():
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway"))
    with pytest.raises(SnapcatServerError, match="HTTP 502: bad gateway"):
        SnapcatClient("http://x", transport=transport).classify([b"x"])


def test_connection_errors_are_their_own_type():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    client = SnapcatClient("http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    with pytest.raises(SnapcatConnectionError, match="cannot reach http://127.0.0.1:9"):
        client.classify([b"x"])
    assert not client.ready()


def test_missing_file_is_an_os_error(tmp_path):
    client = SnapcatClient("http://x", transport=fake_server([]))
    with pytest.raises(FileNotFoundError):
        client.classify([tmp_path / "missing.jpg"])


def test_table_aligns_korean_labels():
    table = format_table(
        [
            ("a.jpg", "1", "여성의류", "womens-clothing", "0.810", "yes"),
            ("", "2", "뷰티/미용", "beauty", "0.100", ""),
        ]
    ).splitlines()
    assert table[0].split() == ["PHOTO", "#", "CATEGORY", "SLUG", "SCORE", "CONFIDENT"]
    assert table[1].split()[-2:] == ["0.810", "yes"]
    # The slug column starts at the same terminal column on every line.
    starts = [
        _width(line[: line.index(slug)])
        for line, slug in zip(table[1:], ["womens", "beauty"], strict=True)
    ]
    assert starts[0] == starts[1] == _width(table[0][: table[0].index("SLUG")])


def test_predict_raw_batches_splits_any_number_of_photos():
    seen: list[dict] = []
    client = SnapcatClient("http://x", transport=fake_server(seen), max_batch=16)
    answers = list(client.predict_raw_batches([b"p"] * 40))
    assert [len(s["payload"]["instances"]) for s in seen] == [16, 16, 8]
    assert sum(len(a["predictions"]) for a in answers) == 40


def test_classify_json_joins_batches_and_keeps_versions_apart():
    from snapcat.commands.classify import joined_answer

    one = {"predictions": [{"confident": True}], "model_version": "2"}
    two = {"predictions": [{"confident": False}], "model_version": "3"}
    same = joined_answer([one, {**two, "model_version": "2"}])
    assert same["model_version"] == "2" and len(same["predictions"]) == 2
    mixed = joined_answer([one, two])
    assert [p["model_version"] for p in mixed["predictions"]] == ["2", "3"]


def test_a_server_limit_below_the_clients_batch_is_followed():
    seen: list[dict] = []
    answer = fake_server(seen)

    def handler(request: httpx.Request) -> httpx.Response:
        count = len(json.loads(request.content)["instances"])
        if count > 5:
            seen.append({"refused": count})
            body = {"error": f"{count} images in one request, over the limit of 5", "max_batch": 5}
            return httpx.Response(400, json=body)
        return answer.handle_request(request)

    client = SnapcatClient("http://x", transport=httpx.MockTransport(handler), max_batch=16)
    assert len(client.classify([b"p"] * 12)) == 12
    sizes = [len(s["payload"]["instances"]) for s in seen if "payload" in s]
    assert sizes == [5, 5, 2] and [s for s in seen if "refused" in s] == [{"refused": 12}]
