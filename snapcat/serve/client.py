"""A small client for the listing-category transformer, for the app backend and the CLI.

    from snapcat.serve.client import SnapcatClient

    with SnapcatClient("http://127.0.0.1:8080", model_name="listing-category") as client:
        for prediction in client.classify(["photo1.jpg", open("photo2.heic", "rb").read()]):
            best = prediction.top
            print(best.label, best.slug, best.score)

Photos go as they are (any format the server accepts, base64 in KServe's V1 JSON); the server
normalizes them. A refused photo raises :class:`SnapcatServerError` with the server's message,
which names the photo's index and the reason (``instance 0: corrupt: ...``).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from snapcat.contract.service_name import DEFAULT_MODEL_NAME
from snapcat.errors import SnapcatError

Photo = str | os.PathLike | bytes | bytearray


class SnapcatClientError(SnapcatError):
    """Any failure of a classification call."""


class SnapcatConnectionError(SnapcatClientError):
    """The server could not be reached or did not answer in time."""


class SnapcatServerError(SnapcatClientError):
    """The server answered with an HTTP error; ``message`` is its ``error`` text."""

    def __init__(
        self, status_code: int, message: str, errors: Sequence[dict] = (), body: dict | None = None
    ):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.errors = list(errors)
        self.body = body or {}

    @property
    def max_batch(self) -> int | None:
        """The server's photos-per-request limit, when this error says the batch was over it."""
        value = self.body.get("max_batch")
        return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class Category:
    slug: str
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    categories: tuple[Category, ...]
    model_version: str = ""
    #: True when the top 3 hold the right category with the model's target precision (95 % by
    #: default); False means "not sure": show the full category picker. A server older than
    #: this field answers False.
    confident: bool = False
    #: The server's id of this suggestion; report the seller's final category with it
    #: (:meth:`SnapcatClient.report_category`). Empty from servers that do not send one.
    prediction_id: str = ""

    @property
    def top(self) -> Category:
        return self.categories[0]

    @classmethod
    def from_dict(cls, raw: dict, model_version: str = "") -> Prediction:
        return cls(
            categories=tuple(
                Category(c["slug"], c["label"], float(c["score"])) for c in raw["categories"]
            ),
            model_version=model_version,
            confident=bool(raw.get("confident", False)),
            prediction_id=str(raw.get("prediction_id") or ""),
        )


@dataclass(frozen=True)
class Explanation:
    """Why the model said a category (:mod:`snapcat.serve.explain`): the class explained, its
    Grad-CAM heat map (rows of floats in [0, 1] over the square photo the model saw) and that map
    blended on the photo (PNG bytes)."""

    slug: str | None
    label: str | None
    class_index: int
    heat_map: tuple[tuple[float, ...], ...]
    overlay_png: bytes

    @classmethod
    def from_dict(cls, raw: dict) -> Explanation:
        return cls(
            slug=raw.get("slug"),
            label=raw.get("label"),
            class_index=int(raw["class_index"]),
            heat_map=tuple(tuple(float(v) for v in row) for row in raw["heat_map"]),
            overlay_png=base64.b64decode(raw["overlay_png"]),
        )


@dataclass(frozen=True)
class ExplainedPrediction(Prediction):
    explanation: Explanation | None = None


@dataclass
class SnapcatClient:
    """Calls ``POST {url}/v1/models/{model_name}:predict``. ``max_batch`` photos go per request
    (the server's ``--max_batch`` is 32 by default; a server that takes fewer says how many, and
    the client splits to that). ``feedback_url`` is the feedback sink's
    (``snapcat feedback serve``), for :meth:`report_category`."""

    url: str
    model_name: str = DEFAULT_MODEL_NAME
    timeout: float = 30.0
    max_batch: int = 16
    headers: dict[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None
    feedback_url: str | None = None
    #: The sink's bearer token (the app backend's Secret); sent only to ``feedback_url``.
    feedback_token: str | None = None

    def __post_init__(self) -> None:
        self.url = _base_url(self.url)
        if self.feedback_url:
            self.feedback_url = _base_url(self.feedback_url)
        self._http = httpx.Client(
            timeout=self.timeout, headers=self.headers, transport=self.transport
        )

    # ------------------------------------------------------------------ public API
    def classify(self, photos: Photo | Iterable[Photo]) -> list[Prediction]:
        """One :class:`Prediction` per photo (paths or bytes), in order."""
        predictions: list[Prediction] = []
        for response in self.predict_raw_batches(photos):
            version = str(response.get("model_version", ""))
            predictions += [Prediction.from_dict(p, version) for p in response["predictions"]]
        return predictions

    def explain(
        self, photos: Photo | Iterable[Photo], class_index: int | None = None
    ) -> list[ExplainedPrediction]:
        """Like :meth:`classify` (the same top categories) plus, per photo, an
        :class:`Explanation` of the top-1 category, or of the model's column ``class_index``
        (``POST .../<model>:explain``; the server computes it with the model)."""
        predictions: list[ExplainedPrediction] = []
        for response in self.explain_raw_batches(photos, class_index):
            version = str(response.get("model_version", ""))
            for raw in response["predictions"]:
                plain = Prediction.from_dict(raw, version)
                predictions.append(
                    ExplainedPrediction(
                        **{f: getattr(plain, f) for f in plain.__dataclass_fields__},
                        explanation=Explanation.from_dict(raw["explanation"]),
                    )
                )
        return predictions

    def explain_raw_batches(
        self, photos: Photo | Iterable[Photo], class_index: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """The server's ``:explain`` JSON answers, one request per ``max_batch`` photos."""
        return self.predict_raw_batches(
            photos, lambda chunk: self.predict_raw(chunk, verb="explain", class_index=class_index)
        )

    def predict_raw_batches(
        self, photos: Photo | Iterable[Photo], send=None
    ) -> Iterator[dict[str, Any]]:
        """The server's JSON responses, one request per ``max_batch`` photos, in order: any number
        of photos without running into the server's per-request limit."""
        items, start = _as_list(photos), 0
        send = send or self.predict_raw
        while start < len(items):
            chunk = items[start : start + self.max_batch]
            try:
                response = send(chunk)
            except SnapcatServerError as exc:  # a server configured for fewer per request
                if exc.max_batch is None or exc.max_batch >= len(chunk):
                    raise
                self.max_batch = exc.max_batch
                continue
            start += len(chunk)
            yield response

    def classify_one(self, photo: Photo) -> Prediction:
        return self.classify([photo])[0]

    def predict_raw(
        self, photos: Photo | Iterable[Photo], verb: str = "predict", class_index: int | None = None
    ) -> dict[str, Any]:
        """One request for all ``photos``; the server's JSON response as it is. ``verb``:
        ``predict`` or ``explain`` (then ``class_index``, if given, goes with every photo)."""
        instances = [
            {"image_bytes": {"b64": base64.b64encode(_read(p)).decode("ascii")}}
            for p in _as_list(photos)
        ]
        if class_index is not None:
            instances = [{**instance, "class_index": class_index} for instance in instances]
        return self._request(
            "POST", f"/v1/models/{self.model_name}:{verb}", {"instances": instances}
        )

    def report_category(
        self, prediction_id: str, category: str, *, attempts: int = 6, backoff: float = 0.5
    ) -> dict[str, Any]:
        """Tells the feedback sink which category the seller finally chose for a suggestion
        (a slug, English name or label). Safe to repeat. While the sink is unreachable or answers
        5xx/429 it is tried again ``attempts`` times in all, waiting ``backoff`` s, then twice as
        long, ...; a 4xx (unknown id or category) raises at once. Returns the sink's verdict:
        ``{"category", "model_version", "top1", "top3", ...}``."""
        if not self.feedback_url:
            raise SnapcatClientError("no feedback_url: pass the feedback sink's URL to the client")
        path = f"/v1/feedback/{prediction_id}"
        for attempt in range(1, max(attempts, 1) + 1):
            try:
                return self._request(
                    "PUT", path, {"category": category}, base=self.feedback_url,
                    headers=self._feedback_headers(),
                )  # fmt: skip
            except (SnapcatConnectionError, SnapcatServerError) as exc:
                retryable = not isinstance(exc, SnapcatServerError) or exc.status_code in RETRY
                if not retryable or attempt >= attempts:
                    raise
                time.sleep(backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def ready(self) -> bool:
        """Whether the transformer and its predictor are ready (``GET /v1/models/<name>``)."""
        try:
            response = self._http.get(f"{self.url}/v1/models/{self.model_name}")
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and bool(response.json().get("ready"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SnapcatClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _feedback_headers(self) -> dict[str, str] | None:
        return {"authorization": f"Bearer {self.feedback_token}"} if self.feedback_token else None

    def _request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        base: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        base = base or self.url
        try:
            response = self._http.request(method, base + path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise SnapcatConnectionError(
                f"{base} did not answer within {self.timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise SnapcatConnectionError(f"cannot reach {base}: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            if isinstance(payload, dict) and "error" in payload:
                raise SnapcatServerError(
                    response.status_code,
                    str(payload["error"]),
                    payload.get("errors") or (),
                    body=payload,
                )
            raise SnapcatServerError(response.status_code, response.text[:500] or "no details")
        if not isinstance(payload, dict):
            raise SnapcatServerError(response.status_code, "the response is not a JSON object")
        return payload


#: Statuses worth retrying a feedback report on: the sink is restarting or overloaded.
RETRY = frozenset({429, 500, 502, 503, 504})


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else "http://" + url


def _as_list(photos: Photo | Iterable[Photo]) -> list[Photo]:
    if isinstance(photos, str | bytes | bytearray | os.PathLike):
        return [photos]
    return list(photos)


def _read(photo: Photo) -> bytes:
    if isinstance(photo, bytes | bytearray):
        return bytes(photo)
    return Path(photo).read_bytes()
