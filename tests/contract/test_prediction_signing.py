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
