"""A small writer of Torch7 binary ``.t7`` files, for tests only (mirrors File.lua's writeObject).

Values: ``None``, bool, numbers, str/bytes, dicts (tables; shared and cyclic ones are written as
references), :class:`Obj` (torch objects), :class:`Storage`, :class:`Tensor` and :class:`Func`.
:func:`from_loaded` turns what ``load_t7`` read back into writable values, e.g. to write a variant of a
fixture with other class names.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from gradcam_core.formats.torch7 import T7Function, T7Object, T7Table


class Obj:
    """A generic torch object: class name + fields (written as a table)."""

    def __init__(self, typename: str, fields: dict, version: str | None = "V 1") -> None:
        self.typename, self.fields, self.version = typename, fields, version


class Storage:
    def __init__(self, typename: str, data: np.ndarray) -> None:
        self.typename, self.data = typename, data


class Tensor:
    def __init__(self, typename: str, sizes, strides, offset: int, storage: Storage | None) -> None:
        self.typename, self.sizes, self.strides, self.offset, self.storage = typename, sizes, strides, offset, storage


class Func:
    def __init__(self, tag: int, code: bytes, upvalues: Any) -> None:
        self.tag, self.code, self.upvalues = tag, code, upvalues


class Writer:
    def __init__(self, long_size: int = 8) -> None:
        self.out = bytearray()
        self.long_size = long_size
        self.index: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps written objects alive so their ids stay unique

    def i32(self, v: int) -> None:
        self.out += struct.pack("<i", v)

    def long(self, v: int) -> None:
        self.out += struct.pack("<q" if self.long_size == 8 else "<i", v)

    def string(self, s) -> None:
        b = s.encode() if isinstance(s, str) else s
        self.i32(len(b))
        self.out += b

    def ref(self, tag: int, obj: Any) -> bool:
        """Write tag + index; True when the object was written before (only the index is needed)."""
        self.i32(tag)
        if id(obj) in self.index:
            self.i32(self.index[id(obj)])
            return True
        self.index[id(obj)] = len(self.index) + 1
        self.keep.append(obj)
        self.i32(self.index[id(obj)])
        return False

    def value(self, v: Any) -> Writer:
        if v is None:
            self.i32(0)
        elif isinstance(v, bool):
            self.i32(5)
            self.i32(int(v))
        elif isinstance(v, (int, float)):
            self.i32(1)
            self.out += struct.pack("<d", v)
        elif isinstance(v, (str, bytes)):
            self.i32(2)
            self.string(v)
        elif isinstance(v, dict):
            if not self.ref(3, v):
                self.i32(len(v))
                for k, x in v.items():
                    self.value(k)
                    self.value(x)
        elif isinstance(v, Func):
            if v.tag == 6:
                self.i32(6)
            elif self.ref(v.tag, v):
                return self
            self.string(v.code)
            self.value(v.upvalues)
        elif isinstance(v, (Obj, Storage, Tensor)):
            if self.ref(4, v):
                return self
            if v.__dict__.get("version", "V 1") is not None:
                self.string(v.__dict__.get("version", "V 1"))
            self.string(v.typename)
            if isinstance(v, Obj):
                self.value(v.fields)
            elif isinstance(v, Storage):
                self.long(len(v.data))
                self.out += v.data.tobytes()
            else:
                self.i32(len(v.sizes))
                for s in list(v.sizes) + list(v.strides) + [v.offset]:
                    self.long(s)
                self.value(v.storage)
        else:
            raise TypeError(type(v))
        return self

    def bytes(self) -> bytes:
        return bytes(self.out)


def t7(v: Any, long_size: int = 8) -> bytes:
    return Writer(long_size).value(v).bytes()


def tensor(typename: str, arr: np.ndarray, storage_type: str | None = None) -> Tensor:
    """A contiguous tensor on its own storage."""
    arr = np.ascontiguousarray(arr)
    strides = [s // arr.itemsize for s in arr.strides]
    st = Storage(storage_type or typename.replace("Tensor", "Storage"), arr.reshape(-1))
    return Tensor(typename, arr.shape, strides, 1, st)


_ELEMENT_NAMES = {
    np.dtype(np.float64): "Double", np.dtype(np.float32): "Float", np.dtype(np.float16): "Half",
    np.dtype(np.int64): "Long", np.dtype(np.int32): "Int", np.dtype(np.int16): "Short",
    np.dtype(np.int8): "Char", np.dtype(np.uint8): "Byte",
}


def sample_file() -> bytes:
    """A small file holding one value of every kind the reader knows (numbers, strings, booleans, nil,
    tables, a shared table, strided tensors over one storage, a Lua function, an empty tensor): the
    reader tests' truncation and byte-flip subject and a fuzz seed."""
    storage = Storage("torch.FloatStorage", np.arange(12, dtype=np.float32))
    shared = {"k": 1}
    return t7({
        "n": 1.5, "i": 3, "s": "héllo", "b": True, "nil": None, "list": {1: "a", 2: "b"},
        "w": Tensor("torch.FloatTensor", [3, 4], [4, 1], 1, storage),
        "wt": Tensor("torch.FloatTensor", [4, 3], [1, 4], 1, storage),
        "lin": Obj("nn.Linear", {"weight": tensor("torch.DoubleTensor", np.ones((2, 3))), "shared": shared}),
        "again": shared,
        "size": Storage("torch.LongStorage", np.array([-1, 7], dtype=np.int64)),
        "f": Func(8, b"\x1bLJ\x02bytecode", {1: {"name": "x", "id": 1, "value": 2}}),
        "empty": Tensor("torch.FloatTensor", [], [], 1, None),
    })


def tensor_typename(dtype: np.dtype, cuda: bool = False) -> str:
    """``torch.FloatTensor`` etc. for a numpy dtype; cutorch's names with ``cuda`` (``torch.CudaTensor``
    for float32, ``torch.CudaDoubleTensor``, ...)."""
    element = _ELEMENT_NAMES[np.dtype(dtype)]
    if cuda:
        element = "Cuda" if element == "Float" else "Cuda" + element
    return f"torch.{element}Tensor"


class Table(dict):
    """A table that can also be a key of another table (identity equality and hash, as in Lua)."""

    __hash__ = object.__hash__  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other


def from_loaded(value: Any, rename: Callable[[str], str] = lambda name: name, cuda: bool = False) -> Any:
    """What ``load_t7`` returned -> values :class:`Writer` writes: tables stay shared (and cyclic),
    class names go through ``rename``, arrays become tensors on their own storages (CUDA types with
    ``cuda``). Storages read as arrays are written back as tensors."""
    memo: dict[int, Any] = {}

    def convert(v: Any) -> Any:
        if id(v) in memo:
            return memo[id(v)]
        if isinstance(v, T7Table):
            out = Table()
            memo[id(v)] = out
            for k, x in v.items():
                out[convert(k)] = convert(x)
            return out
        if isinstance(v, T7Object):
            obj = Obj(rename(v.typename), {}, f"V {v.version}" if v.version else None)
            memo[id(v)] = obj
            obj.fields = convert(v.fields)
            return obj
        if isinstance(v, np.ndarray):
            typename = tensor_typename(v.dtype, cuda)
            if v.size == 0:
                return Tensor(typename, [], [], 1, None)
            return tensor(typename, v)
        if isinstance(v, T7Function):
            fn = Func(v.tag, v.bytecode, None)
            memo[id(v)] = fn
            fn.upvalues = convert(v.upvalues)
            return fn
        return v

    return convert(value)
