"""A small client for the listing-category transformer, for the app backend and the CLI.

    from snapcat.client import SnapcatClient

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from snapcat.transformer_core import DEFAULT_MODEL_NAME

Photo = str | os.PathLike | bytes | bytearray


class SnapcatClientError(Exception):
    """Any failure of a classification call."""


class SnapcatConnectionError(SnapcatClientError):
    """The server could not be reached or did not answer in time."""


class SnapcatServerError(SnapcatClientError):
    """The server answered with an HTTP error; ``message`` is its ``error`` text."""

    def __init__(self, status_code: int, message: str, errors: Sequence[dict] = ()):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.errors = list(errors)


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
        )


@dataclass
class SnapcatClient:
    """Calls ``POST {url}/v1/models/{model_name}:predict``. ``max_batch`` photos go per request
    (the server's ``--max_batch`` is 32 by default)."""

    url: str
    model_name: str = DEFAULT_MODEL_NAME
    timeout: float = 30.0
    max_batch: int = 16
    headers: dict[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self._http = httpx.Client(
            timeout=self.timeout, headers=self.headers, transport=self.transport
        )

    # ------------------------------------------------------------------ public API
    def classify(self, photos: Photo | Iterable[Photo]) -> list[Prediction]:
        """One :class:`Prediction` per photo (paths or bytes), in order."""
        items = _as_list(photos)
        predictions: list[Prediction] = []
        for start in range(0, len(items), self.max_batch):
            response = self.predict_raw(items[start : start + self.max_batch])
            version = str(response.get("model_version", ""))
            predictions += [Prediction.from_dict(p, version) for p in response["predictions"]]
        return predictions

    def classify_one(self, photo: Photo) -> Prediction:
        return self.classify([photo])[0]

    def predict_raw(self, photos: Photo | Iterable[Photo]) -> dict[str, Any]:
        """One request for all ``photos``; the server's JSON response as it is."""
        instances = [
            {"image_bytes": {"b64": base64.b64encode(_read(p)).decode("ascii")}}
            for p in _as_list(photos)
        ]
        return self._request(
            "POST", f"/v1/models/{self.model_name}:predict", {"instances": instances}
        )

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
    def _request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, self.url + path, json=body)
        except httpx.TimeoutException as exc:
            raise SnapcatConnectionError(
                f"{self.url} did not answer within {self.timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise SnapcatConnectionError(f"cannot reach {self.url}: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            if isinstance(payload, dict) and "error" in payload:
                raise SnapcatServerError(
                    response.status_code, str(payload["error"]), payload.get("errors") or ()
                )
            raise SnapcatServerError(response.status_code, response.text[:500] or "no details")
        if not isinstance(payload, dict):
            raise SnapcatServerError(response.status_code, "the response is not a JSON object")
        return payload


def _as_list(photos: Photo | Iterable[Photo]) -> list[Photo]:
    if isinstance(photos, str | bytes | bytearray | os.PathLike):
        return [photos]
    return list(photos)


def _read(photo: Photo) -> bytes:
    if isinstance(photo, bytes | bytearray):
        return bytes(photo)
    return Path(photo).read_bytes()
