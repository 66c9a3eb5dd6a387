"""A torch state_dict file read into numpy without torch, and without running anything it names.

torch.save writes a pickle whose tensors point ("persistent ids") at raw storages: since torch 1.6 the
records of a zip archive (`<name>/data.pkl`, `<name>/data/<key>`), before that one stream (a magic
number, a protocol number, system info, the pickle, the storage keys, then each storage as an 8-byte
element count and its bytes). The unpickler here resolves only what a state_dict is made of — an
OrderedDict, torch's tensor and parameter rebuilders, the storage classes — with functions of its
own, and refuses any other name (the way torch.load(weights_only=True) does, without importing torch,
which must not share a process with TensorFlow's engines).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
            "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
            "BoolStorage": "?"}
DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<u2", "int64": "<i8", "int32": "<i4",
          "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?"}


class _Storage:
    """A storage class named by the pickle: its dtype, until the bytes are attached."""

    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self, data: dict) -> np.ndarray:
        flat = data[self.storage]  # (n,) of the storage's dtype
        n = int(np.prod(self.size)) if self.size else 1
        if n == 0:
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if self.offset < 0 or last >= len(flat) or min(self.stride, default=1) < 0:
            raise ValueError(f"a tensor of shape {self.size} reaches outside its storage")
        item = flat.dtype.itemsize
        out = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, tuple(st * item for st in self.stride))
        out = np.array(out)  # a copy: no view into the file's bytes
        if flat.dtype == np.dtype("<u2"):  # bfloat16 (torch has no 16-bit unsigned storage): float32's high half
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *rest):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict):
        super().__init__(f)
        self.storages = storages  # key -> (dtype, element count or None)

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGES:
            return _Storage(STORAGES[name])
        if module == "torch" and name in DTYPES:
            return _Storage(DTYPES[name])
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not part of a state_dict")

    def persistent_load(self, pid):
        # zip: ('storage', storage type, key, location, numel); legacy: the same with a view's metadata
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or not isinstance(pid[1], _Storage):
            raise pickle.UnpicklingError(f"persistent id {str(pid)[:60]} is not a tensor storage")
        kind, key = pid[1], str(pid[2])
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("a storage view (a pre-1.6 feature) is not read")
        self.storages[key] = (kind.dtype, int(pid[4]) if len(pid) > 4 else None)
        return key


def load(path) -> dict[str, np.ndarray]:
    """{name: array} of a torch state_dict file (either format); ValueError/UnpicklingError on anything else."""
    raw = open(path, "rb").read()
    if raw[:4] == b"PK\x03\x04":
        return _load_zip(raw)
    return _load_legacy(raw)


def _finish(obj, storages: dict, data: dict) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise ValueError("it is not a mapping of names to tensors")
    for key in ("state_dict", "model", "model_state_dict"):  # a training checkpoint wrapping the weights
        if isinstance(obj.get(key), dict):
            obj = obj[key]
    out = {}
    for name, t in obj.items():
        if not isinstance(t, _Tensor):
            raise ValueError(f"{name} is not a tensor")
        out[str(name)] = t.array(data)
    return out


def _load_zip(raw: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        names = z.namelist()
        if len(names) != len(set(names)):
            raise ValueError("a name occurs twice in the archive")
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError("no data.pkl record")
        prefix = pkl[0][:-len("data.pkl")]
        storages: dict = {}
        obj = _Unpickler(io.BytesIO(z.read(pkl[0])), storages).load()
        data = {}
        for key, (dtype, count) in storages.items():
            buf = z.read(f"{prefix}data/{key}")
            if count is not None and len(buf) < count * dtype.itemsize:
                raise ValueError(f"storage {key} is shorter than it declares")
            data[key] = np.frombuffer(buf, dtype, len(buf) // dtype.itemsize)
    return _finish(obj, storages, data)


def _load_legacy(raw: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(raw)
    plain = lambda: _NoGlobals(f).load()  # noqa: E731 - the header pickles hold numbers and a dict of numbers
    if plain() != LEGACY_MAGIC:
        raise ValueError("not a torch file (no zip archive, no torch magic number)")
    plain(), plain()  # protocol version, system info
    storages: dict = {}
    obj = _Unpickler(f, storages).load()
    keys = plain()
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise ValueError("its storage list does not match its tensors")
    data = {}
    for key in map(str, keys):  # each: an int64 element count, then the elements
        dtype, declared = storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        nbytes = count * dtype.itemsize
        if count < 0 or (declared is not None and count != declared) or f.tell() + nbytes > len(raw):
            raise ValueError(f"storage {key} does not fit the file")
        data[key] = np.frombuffer(raw, dtype, count, f.tell())
        f.seek(nbytes, 1)
    return _finish(obj, storages, data)


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"global '{module}.{name}' in a torch file's header")
