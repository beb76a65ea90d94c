"""Signed prediction ids (issue 25): what a signature binds, and key rotation without downtime
(the previous key verifies during its grace period, not after)."""

from __future__ import annotations

import time

import pytest

from snapcat.contract.prediction_signing import (
    SIGNED_ID,
    KeyMaterialError,
    KeyRing,
    new_key_text,
    write_key_folder,
)
from snapcat.serve.responses import ResponseBuilder

TOP = ["beauty", "digital-devices"]


def test_a_signature_binds_the_answer(tmp_path):
    ring = KeyRing.load(write_key_folder(tmp_path / "keys", kid="k1"))
    pid = ring.sign("7", TOP, True)
    assert SIGNED_ID.match(pid) and pid.startswith("k1.")
    assert ring.verify(pid, "7", TOP, True)
    assert not ring.verify(pid, "8", TOP, True)  # another version
    assert not ring.verify(pid, "7", TOP[::-1], True)  # other suggestions
    assert not ring.verify(pid, "7", TOP, False)  # another confident flag
    assert not ring.verify(pid[:-1] + ("0" if pid[-1] != "0" else "1"), "7", TOP, True)
    assert not KeyRing.ephemeral().verify(pid, "7", TOP, True)  # another key, same id form
    assert not ring.verify("0" * 32, "7", TOP, True)


def test_rotation_accepts_the_previous_key_for_its_grace_period(tmp_path):
    folder = write_key_folder(tmp_path / "keys", kid="old")
    ring = KeyRing.load(folder)
    old = ring.sign("7", TOP, False)
    # Rotate as docs/deploy.md says: current -> previous (with an expiry), a new current.
    (folder / "previous").write_text(
        (folder / "current").read_text().strip() + f":{time.time() + 3600}"
    )
    (folder / "current").write_text(new_key_text("new"))
    ring.refresh(force=True)
    assert ring.sign("7", TOP, False).startswith("new.")
    assert ring.verify(old, "7", TOP, False)  # answers given before the rotation still count
    expired = (folder / "previous").read_text().rsplit(":", 1)[0] + f":{time.time() - 1}"
    (folder / "previous").write_text(expired)
    ring.refresh(force=True)
    assert not ring.verify(old, "7", TOP, False)  # past the grace period


def test_a_broken_rotation_keeps_the_keys_in_use(tmp_path):
    folder = write_key_folder(tmp_path / "keys", kid="k1")
    ring = KeyRing.load(folder)
    (folder / "current").write_text("half-written")
    ring.refresh(force=True)
    assert ring.current.kid == "k1"
    with pytest.raises(KeyMaterialError, match="key id"):
        KeyRing.load(folder)
    (folder / "current").write_text("k1:abcd")
    with pytest.raises(KeyMaterialError, match="at least 64 hex digits"):
        KeyRing.load(folder)


def test_the_transformer_signs_with_the_mounted_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPCAT_PREDICTION_KEYS", str(write_key_folder(tmp_path / "k", "prod")))
    builder = ResponseBuilder(top_k=2)
    assert builder.signer.current.kid == "prod"
    monkeypatch.delenv("SNAPCAT_PREDICTION_KEYS")
    assert ResponseBuilder(top_k=2).signer.current.kid == "ephemeral"  # verifies nowhere


def test_what_the_transformer_answers_verifies_as_the_sink_reads_it(tmp_path):
    """Both wire forms, built by ResponseBuilder and read back by the sink's event parser: every
    id verifies with the answer's version, slugs and confident flag (a V2 answer whose ids did
    not would be refused, 403, for all its traffic)."""
    from snapcat.feedback.events import response_confident, response_predictions
    from snapcat.serve.transformer_core import PredictorAnswer

    ring = KeyRing.load(write_key_folder(tmp_path / "keys"))
    classes = ("beauty", "digital-devices", "plants", "pets")
    answer = PredictorAnswer(
        probabilities=[[0.9, 0.05, 0.03, 0.02], [0.3, 0.3, 0.2, 0.2]],
        classes=[classes, classes],
        version="1795757521",
        labels=[classes, classes],
        thresholds=[0.9, 0.9],
    )
    builder = ResponseBuilder(top_k=3, signer=ring)
    v2 = {"model_version": answer.version, "outputs": builder.v2_outputs(answer)}
    for body in (builder.v1_response(answer), v2):
        confident = response_confident(body)
        rows = response_predictions(body)
        assert len(rows) == 2 and len(confident) == 1
        assert all(ring.verify(pid, version, top, pid in confident) for pid, version, top in rows)
