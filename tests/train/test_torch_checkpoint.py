"""Issue 24, finding 8: hostile PyTorch checkpoints against :mod:`snapcat.train.torch_checkpoint`
(defence in depth: the production caller checks the pinned SHA-256 first). Each file is written
opcode by opcode, as an attacker would, since torch is not installed."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from snapcat.train import torch_checkpoint
from snapcat.train.torch_checkpoint import LEGACY_MAGIC, CheckpointError, read_state_dict

pytestmark = pytest.mark.timeout(60)


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _tuple(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def tensor(size, stride, offset=0, key="0", count=4) -> bytes:
    """The pickle ops of ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``."""
    storage = _tuple(
        _text("storage"), b"ctorch\nFloatStorage\n", _text(key), _text("cpu"), _int(count)
    )
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n"
        + _tuple(
            storage + b"Q",
            _int(offset),
            _tuple(*map(_int, size)),
            _tuple(*map(_int, stride)),
            b"\x89",
            b"ccollections\nOrderedDict\n)R",
        )
        + b"R"
    )


def state_dict(*items: tuple[bytes, bytes]) -> bytes:
    return b"\x80\x02}" + b"".join(key + value + b"s" for key, value in items) + b"."


def legacy(path: Path, tree: bytes, storages: dict[str, np.ndarray] | None = None) -> Path:
    storages = {"0": np.arange(4, dtype="<f4")} if storages is None else storages
    header = (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})
    parts = [pickle.dumps(x, protocol=2) for x in header]
    parts.append(tree)
    parts.append(pickle.dumps(list(storages), protocol=2))
    for array in storages.values():
        parts.append(struct.pack("<q", array.size) + array.tobytes())
    path.write_bytes(b"".join(parts))
    return path


def test_a_well_formed_file_is_read(tmp_path):
    path = legacy(tmp_path / "ok.pth", state_dict((_text("w"), tensor((2, 2), (2, 1)))))
    state = read_state_dict(path)
    assert state["w"].tolist() == [[0, 1], [2, 3]]
    transposed = legacy(tmp_path / "t.pth", state_dict((_text("w"), tensor((2, 2), (1, 2)))))
    assert read_state_dict(transposed)["w"].tolist() == [[0, 2], [1, 3]]


@pytest.mark.parametrize(
    "size,stride,offset",
    [
        ((2,), (2**40,), 0),  # SIGSEGV before
        ((1000,), (1,), 0),  # 16 MB of other memory read into the weights before
        ((4, 4), (4, 1), 0),
        ((2,), (1,), 3),
        ((0,), (1,), 10),
        ((2,), (-1,), 1),
        ((2, 2), (2,), 0),
    ],
)
def test_views_past_their_storage_are_refused(tmp_path, size, stride, offset):
    path = legacy(tmp_path / "v.pth", state_dict((_text("w"), tensor(size, stride, offset))))
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_a_billion_laughs_key_is_refused_at_once(tmp_path):
    """A tuple of tuples, each level the previous one twice (memo references): 900 bytes that
    hash in 2^60 steps. Was: hung (3.2 GB after 6 minutes)."""
    laughs = _tuple(_text("lol")) + b"q\x00"
    for _ in range(60):
        laughs += b"h\x00h\x00\x86q\x00"
    tree = b"\x80\x02}" + laughs + b"K\x01s."
    with pytest.raises(CheckpointError, match="not a string"):
        read_state_dict(legacy(tmp_path / "laughs.pth", tree))
    laughs_storage = legacy(
        tmp_path / "pid.pth", state_dict((_text("w"), tensor((2,), (1,), key="0")))
    )
    read_state_dict(laughs_storage)


def test_build_cannot_change_the_readers_classes(tmp_path):
    """BUILD on a global the unpickler hands out could set class attributes for the whole
    process (e.g. ``_TensorRef.__init__``)."""
    init = torch_checkpoint._TensorRef.__init__
    for target in (b"ctorch._utils\n_rebuild_tensor_v2\n", b"ccollections\nOrderedDict\n"):
        tree = b"\x80\x02" + target + b"N}" + _text("__init__") + b"Ns\x86b."
        with pytest.raises(CheckpointError):
            read_state_dict(legacy(tmp_path / "build.pth", tree))
    assert torch_checkpoint._TensorRef.__init__ is init
    path = legacy(tmp_path / "ok.pth", state_dict((_text("w"), tensor((4,), (1,)))))
    assert read_state_dict(path)["w"].shape == (4,)


def test_a_zip_that_unpacks_past_the_bound_is_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", state_dict((_text("w"), tensor((4,), (1,)))))
        with archive.open("archive/data/0", "w") as member:
            for _ in range(64):
                member.write(bytes(1024 * 1024))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(CheckpointError, match="unpack to over"):
        read_state_dict(path, max_bytes=16 * 1024 * 1024)


@pytest.mark.parametrize(
    "tree",
    [
        b"\x80\x02}" + _int(5) + tensor((2,), (1,)) + b"s.",  # an integer key
        b"\x80\x02(ccollections\nOrderedDict\no.",  # OBJ
        b"\x80\x02\x8f" + _text("x") + b"\x90.",  # a set
        b"\x80\x02cos\nsystem\n" + _tuple(_text("true")) + b"R.",
        b"\x80\x02ccollections\nOrderedDict\n" + _tuple(_text("a")) + b"R.",
        b"\x80\x02}" + _text("w") + tensor((2,), (1,), key="missing") + b"s.",
        b"\x80\x02}" + _text("w") + b"(" + _text("storage") + _int(3) + b"tQs.",
        b"\x80\x02" + b"]" * 10 + b".",
        b"\x80\x02(" * 5 + b"e.",
        b"\x80\x02X\xff\xff\xff\x7f.",
        b"garbage",
    ],
)
def test_every_malformed_file_is_a_checkpoint_error(tmp_path, tree):
    with pytest.raises(CheckpointError):
        read_state_dict(legacy(tmp_path / "bad.pth", tree))


def test_malformed_storages_are_checkpoint_errors(tmp_path):
    ok = state_dict((_text("w"), tensor((4,), (1,))))
    path = legacy(tmp_path / "s.pth", ok)
    data = path.read_bytes()
    count = data.rfind(struct.pack("<q", 4))
    negative = data[:count] + struct.pack("<q", -1) + data[count + 8 :]
    huge = data[:count] + struct.pack("<q", 2**60) + data[count + 8 :]
    for bad in (negative, huge, data[:-3]):
        path.write_bytes(bad)
        with pytest.raises(CheckpointError):
            read_state_dict(path)
    odd = tmp_path / "odd.pth"
    with zipfile.ZipFile(odd, "w") as archive:
        archive.writestr("archive/data.pkl", ok)
        archive.writestr("archive/data/0", b"\x00" * 7)  # not whole float32s
    with pytest.raises(CheckpointError):
        read_state_dict(odd)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(odd.read_bytes()[:-30])
    with pytest.raises(CheckpointError):
        read_state_dict(cut)
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "missing.pth")
