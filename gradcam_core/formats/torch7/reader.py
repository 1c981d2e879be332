"""Reader for Torch7 binary serialization files (``.t7`` written by ``torch.save`` in binary mode).

No dependency on ``torchfile`` or ``torch``: the file is read through one buffer (``mmap`` of the file, or
the ``bytes`` given) with ``struct`` for headers and ``numpy.frombuffer`` for bulk tensor data.

Data model
----------
``load_t7(path_or_bytes)`` returns the root object, converted as follows:

==========================  ===================================================================
Lua / Torch value            Python value
==========================  ===================================================================
``nil``                      ``None``
boolean                      ``bool``
number                       ``int`` when integral (``2.0`` -> ``2``), else ``float``
string                       ``str`` (UTF-8; invalid bytes kept with ``surrogateescape``, so
                             ``s.encode("utf-8", "surrogateescape")`` gives the original bytes)
table                        :class:`T7Table` (a ``dict``; keys are ``str``, ``int``, ``float``,
                             ``bool``, or another table/object; ``t.as_list()`` gives the array
                             part when the keys are exactly ``1..n``)
``torch.*Tensor``            ``numpy.ndarray`` of the tensor's shape and dtype: a C-contiguous
                             copy that honours sizes, strides and storageOffset. A tensor with
                             ``nDimension == 0`` is ``np.empty(0, dtype)``.
``torch.*Storage``           1-D ``numpy.ndarray`` (a copy). Tensors that share a storage are
                             each read correctly from it.
``torch.Cuda*``              read as the CPU type (``CudaTensor`` -> float32,
                             ``CudaDoubleTensor`` -> float64, ``CudaHalfTensor`` -> float16, ...)
any other torch class        :class:`T7Object`: ``.typename`` (e.g. ``"nn.Linear"``), ``.version``,
(``nn.*``, ``nngraph.*``..)  ``.fields`` (a :class:`T7Table`); ``obj["weight"]``, ``obj.get(...)``
function (tags 6, 7, 8)      :class:`T7Function`: the dumped bytecode and the upvalue table,
                             never executed
==========================  ===================================================================

Element types: Double -> float64, Float -> float32, Half -> float16, Long -> int64, Int -> int32,
Short -> int16, Char -> int8, Byte -> uint8.

Tables, torch objects and recursive functions carry a reference index in the file: an index read a
second time yields the *same* Python object, so shared and cyclic structures are preserved (a table that
contains itself contains the same :class:`T7Table`). Tables and objects therefore compare and hash by
identity, as Lua values do; compare contents with ``dict(t) == ...``. A Lua ``nil`` value in a table
means "no entry" and is dropped, as Lua does. Keys ``true`` and ``1`` would collide in a Python dict
(``True == 1``); Torch checkpoints never use boolean keys.

Format (little-endian)
----------------------
Every value starts with an int32 type tag: 0 nil, 1 number (float64), 2 string (int32 length, bytes),
3 table, 4 torch object, 5 boolean (int32, 0 or 1), 6 function without reference index (int32 length,
bytecode, upvalues), 7 legacy recursive function and 8 recursive function (both: int32 index, then as 6).
Tables: int32 index, int32 entry count, key/value pairs. Torch objects: int32 index, then either
``"V <n>"`` followed by the class name, or (files from before versioning) the class name alone.
Tensors: int32 nDimension, C ``long`` sizes[n], strides[n], storageOffset (1-based), then the storage as
an object (nil for an empty tensor). Storages: C ``long`` element count, then the raw elements. Every
other class is followed by a table holding its fields. A C ``long`` is 8 bytes in files written on
64-bit Linux/macOS (the default); pass ``long_size=4`` for files written where ``long`` is 4 bytes
(Windows, 32-bit; Lua's ``torch.load(f, 'b32')``). In such files LongStorage elements are 4 bytes too.

Safety
------
The reader is meant for untrusted files. A path that is not a regular file (a folder, pipe or device) is
refused before anything is read. Anything wrong raises :class:`GradCamError` with one line
naming the file, the problem and the byte offset. In particular: every length or count is checked
against the bytes that remain *before* anything is allocated; nesting is tracked on an explicit stack
(no Python recursion) and bounded by ``max_depth``; unknown tags, malformed class names or version
strings, more than 64 tensor dimensions, tensors reaching outside their storage, and storages whose type
does not match their tensor are rejected. Because tensors are copies and many tensors may share one
storage, the total bytes of tensor copies is bounded by ``max_expansion`` times the file size (plus
1 MiB); normal checkpoints use about 1x. Bytes after the root object are ignored, as ``torch.load``
does.
"""
from __future__ import annotations

import math
import mmap
import os
import re
import struct
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np

from ...errors import GradCamError
from ...fileio import open_regular

__all__ = ["load_t7", "T7Table", "T7Object", "T7Function", "DEFAULT_MAX_DEPTH"]

DEFAULT_MAX_DEPTH = 10_000
MAX_TENSOR_DIMS = 64
_EXPANSION_SLACK = 1 << 20  # bytes of tensor copies always allowed, whatever the file size

TAG_NIL, TAG_NUMBER, TAG_STRING, TAG_TABLE, TAG_TORCH, TAG_BOOLEAN = 0, 1, 2, 3, 4, 5
TAG_FUNCTION, TAG_LEGACY_RECUR_FUNCTION, TAG_RECUR_FUNCTION = 6, 7, 8

_I32 = struct.Struct("<i").unpack_from
_I64 = struct.Struct("<q").unpack_from
_F64 = struct.Struct("<d").unpack_from

# Torch element type name -> little-endian numpy dtype of the elements in the file.
_ELEMENT_TYPES = {
    "Double": "<f8", "Float": "<f4", "Half": "<f2", "Long": "<i8",
    "Int": "<i4", "Short": "<i2", "Char": "i1", "Byte": "u1",
}
# CUDA class names that differ from "Cuda" + the CPU element name (cutorch's float type is plain "Cuda").
_CUDA_ALIASES = {"Float": "Cuda"}

_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_VERSION = re.compile(rb"V (-?[0-9]+(?:\.[0-9]*)?)\Z")


def _class_tables() -> tuple[dict[str, str], dict[str, str]]:
    tensors: dict[str, str] = {}
    storages: dict[str, str] = {}
    for element, dtype in _ELEMENT_TYPES.items():
        for prefix in (element, "Cuda" + element):
            tensors[f"torch.{prefix}Tensor"] = dtype
            storages[f"torch.{prefix}Storage"] = dtype
        cuda = _CUDA_ALIASES.get(element)
        if cuda:
            tensors[f"torch.{cuda}Tensor"] = dtype
            storages[f"torch.{cuda}Storage"] = dtype
    return tensors, storages


_TENSOR_CLASSES, _STORAGE_CLASSES = _class_tables()


class T7Table(dict):
    """A Lua table: a ``dict`` with identity equality and hashing (so tables can be keys, as in Lua)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = object.__hash__  # type: ignore[assignment]

    def as_list(self) -> list | None:
        """The values for keys ``1..n`` in order when the keys are exactly the integers ``1..n``
        (``[]`` for an empty table); ``None`` otherwise."""
        n = len(self)
        for k in self:
            if type(k) is not int or not 1 <= k <= n:
                return None
        return [self[i] for i in range(1, n + 1)]

    def __repr__(self) -> str:
        return f"T7Table({dict.__repr__(self)})"


class T7Object:
    """An instance of a Torch class that has no custom reader (``nn.Linear``, ``nngraph.Node``, ...).

    ``typename`` is the class name, ``version`` the serialization version (0 for unversioned files),
    ``fields`` the :class:`T7Table` of its fields. ``obj["weight"]`` and ``obj.get("weight")`` read fields.
    """

    __slots__ = ("typename", "version", "fields")

    def __init__(self, typename: str, fields: T7Table | None = None, version: int | float = 0) -> None:
        self.typename = typename
        self.version = version
        self.fields: T7Table = T7Table() if fields is None else fields

    def __getitem__(self, key: Any) -> Any:
        return self.fields[key]

    def get(self, key: Any, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when absent."""
        return self.fields.get(key, default)

    def __contains__(self, key: Any) -> bool:
        return key in self.fields

    def keys(self) -> Iterator[Any]:
        """The field names."""
        return iter(self.fields.keys())

    def __repr__(self) -> str:
        names = ", ".join(repr(k) for k in list(self.fields)[:12])
        more = ", ..." if len(self.fields) > 12 else ""
        return f"T7Object({self.typename!r}, fields=[{names}{more}])"


class T7Function:
    """A serialized Lua function; kept opaque (never executed).

    ``tag`` is the type tag it was stored with (6 plain, 7 legacy recursive, 8 recursive), ``bytecode``
    the ``string.dump`` output, ``upvalues`` the upvalue table as stored (for tag 8, entries are tables
    with ``name``, ``id`` and ``value``).
    """

    __slots__ = ("tag", "bytecode", "upvalues")

    def __init__(self, tag: int, bytecode: bytes, upvalues: Any = None) -> None:
        self.tag = tag
        self.bytecode = bytecode
        self.upvalues = upvalues

    def __repr__(self) -> str:
        return f"T7Function(tag={self.tag}, {len(self.bytecode)} bytes of bytecode)"


class _Storage:
    """A storage as read: a read-only view of the file's bytes, copied for users on first request."""

    __slots__ = ("typename", "view", "dtype", "_array")

    def __init__(self, typename: str, view: np.ndarray, dtype: np.dtype) -> None:
        self.typename = typename
        self.view = view          # file dtype (little-endian; 4-byte Long with long_size=4)
        self.dtype = dtype        # native dtype users get
        self._array: np.ndarray | None = None

    def user(self) -> np.ndarray:
        if self._array is None:
            self._array = np.array(self.view, dtype=self.dtype, copy=True)
        return self._array


class _Pending:
    """Placeholder registered for a tensor whose storage is still being read."""

    __slots__ = ("typename",)

    def __init__(self, typename: str) -> None:
        self.typename = typename


def _user(value: Any) -> Any:
    return value.user() if type(value) is _Storage else value


def _describe(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, (_Storage, _Pending, T7Object)):
        return value.typename
    if isinstance(value, T7Table):
        return "a table"
    if isinstance(value, np.ndarray):
        return "a tensor"
    return type(value).__name__


# The explicit parse stack holds one list per open container: [kind, object, entries left, pending key,
# byte offset where it started, extra]. Lists are cheaper than instances here.
_K_TABLE, _K_OBJECT, _K_TENSOR, _K_FUNCTION = range(4)
_NO_KEY = object()
_PUSHED = object()


class _Reader:
    def __init__(self, buf: Any, name: str, *, max_depth: int, long_size: int, max_expansion: float) -> None:
        self.buf = buf
        self.name = name
        self.pos = 0
        self.end = len(buf)
        self.max_depth = max_depth
        self.long_size = long_size
        self.objects: dict[int, Any] = {}
        self.class_names: dict[bytes, str] = {}  # validated class names
        self.versions: dict[bytes, int | float] = {}
        self.budget = int(max_expansion * self.end) + _EXPANSION_SLACK
        self.long_arrays: dict[int, Any] = {}  # dimension count -> struct unpacker

    # -- primitives -------------------------------------------------------------------------------

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        raise GradCamError(f"{self.name}: {message} at byte {self.pos if at is None else at}")

    def truncated(self, what: str, need: int) -> NoReturn:
        left = self.end - self.pos
        self.fail(f"truncated while reading {what} ({need} bytes needed, {left} left)")

    def i32(self, what: str) -> int:
        p = self.pos
        if p + 4 > self.end:
            self.truncated(what, 4)
        self.pos = p + 4
        return _I32(self.buf, p)[0]

    def long(self, what: str) -> int:
        p = self.pos
        n = self.long_size
        if p + n > self.end:
            self.truncated(what, n)
        self.pos = p + n
        return (_I64 if n == 8 else _I32)(self.buf, p)[0]

    def longs(self, count: int, what: str) -> tuple[int, ...]:
        p = self.pos
        n = count * self.long_size
        if p + n > self.end:
            self.truncated(what, n)
        unpack = self.long_arrays.get(count)
        if unpack is None:
            fmt = f"<{count}{'q' if self.long_size == 8 else 'i'}"
            unpack = self.long_arrays[count] = struct.Struct(fmt).unpack_from
        self.pos = p + n
        return unpack(self.buf, p)

    def raw(self, n: int, what: str) -> bytes:
        p = self.pos
        if n < 0:
            self.fail(f"negative length {n} for {what}", p - 4)
        if n > self.end - p:
            self.truncated(what, n)
        self.pos = p + n
        return bytes(self.buf[p:p + n])

    def push(self, stack: list[list], frame: list) -> object:
        if len(stack) >= self.max_depth:
            self.fail(f"nesting deeper than {self.max_depth} levels", frame[4])
        stack.append(frame)
        return _PUSHED

    def check_key(self, key: Any, table_start: int) -> Any:
        if key is None:
            self.fail(f"nil key in the table from byte {table_start}")
        if type(key) is float and math.isnan(key):
            self.fail(f"NaN key in the table from byte {table_start}")
        key = _user(key)
        try:
            hash(key)
        except TypeError:
            self.fail(f"unsupported key type ({_describe(key)}) in the table from byte {table_start}")
        return key

    # -- the parse loop ---------------------------------------------------------------------------

    def read_root(self) -> Any:
        """Read the object at the current position, iteratively (no Python recursion)."""
        buf, end, objects = self.buf, self.end, self.objects
        stack: list[list] = []
        max_depth = self.max_depth
        i32, f64 = _I32, _F64
        while True:
            # 1. Read one value; containers that need children push a frame and loop back here.
            at = self.pos
            p = at + 4
            if p > end:
                self.truncated("a type tag", 4)
            tag = i32(buf, at)[0]
            if tag == TAG_STRING:
                if p + 4 > end:
                    self.pos = p
                    self.truncated("a string length", 4)
                n = i32(buf, p)[0]
                p += 4
                if n < 0 or n > end - p:
                    self.pos = p
                    self.raw(n, "a string")  # raises
                self.pos = p + n
                value: Any = str(buf[p:p + n], "utf-8", "surrogateescape")
            elif tag == TAG_NUMBER:
                if p + 8 > end:
                    self.pos = p
                    self.truncated("a number", 8)
                self.pos = p + 8
                value = f64(buf, p)[0]
                if value.is_integer():
                    value = int(value)
            elif tag == TAG_TABLE or tag == TAG_TORCH or tag == TAG_RECUR_FUNCTION or tag == TAG_LEGACY_RECUR_FUNCTION:
                self.pos = p
                if p + 4 > end:
                    self.truncated("a reference index", 4)
                index = i32(buf, p)[0]
                p += 4
                self.pos = p
                if index in objects:  # a reference to an object read before (or being read)
                    value = objects[index]
                elif tag == TAG_TABLE:
                    if p + 4 > end:
                        self.truncated("a table size", 4)
                    count = i32(buf, p)[0]
                    p += 4
                    self.pos = p
                    if count < 0 or count > (end - p) >> 3:  # each entry needs at least two type tags
                        self.fail(f"table of {count} entries cannot fit in the {end - p} bytes left", p - 4)
                    value = objects[index] = T7Table()
                    if count:
                        if len(stack) >= max_depth:
                            self.fail(f"nesting deeper than {max_depth} levels", at)
                        stack.append([_K_TABLE, value, count, _NO_KEY, at, None])
                        continue
                else:
                    if tag == TAG_TORCH:
                        value = self.start_torch(stack, index, at)
                    else:
                        value = self.start_function(stack, tag, index, at)
                    if value is _PUSHED:
                        continue
            elif tag == TAG_NIL:
                self.pos = p
                value = None
            elif tag == TAG_BOOLEAN:
                self.pos = p
                b = self.i32("a boolean")
                if b != 0 and b != 1:
                    self.fail(f"bad boolean value {b}", p)
                value = b == 1
            elif tag == TAG_FUNCTION:
                self.pos = p
                self.start_function(stack, tag, None, at)
                continue
            else:
                self.fail(f"unknown type tag {tag}", at)

            # 2. Hand the value to the open containers; each one it completes becomes the next value.
            while stack:
                frame = stack[-1]
                kind = frame[0]
                if kind == _K_TABLE:
                    if frame[3] is _NO_KEY:
                        frame[3] = value if type(value) is str else self.check_key(value, frame[4])
                        break
                    key = frame[3]
                    frame[3] = _NO_KEY
                    if value is None:
                        frame[1].pop(key, None)  # t[k] = nil removes the entry in Lua
                    else:
                        frame[1][key] = value.user() if type(value) is _Storage else value
                    frame[2] -= 1
                    if frame[2]:
                        break
                    stack.pop()
                    value = frame[1]
                    continue
                stack.pop()
                if kind == _K_OBJECT:
                    obj = frame[1]
                    if type(value) is not T7Table:
                        self.fail(f"fields of the {obj.typename} from byte {frame[4]} "
                                  f"are {_describe(value)}, expected a table")
                    obj.fields = value
                    value = obj
                elif kind == _K_TENSOR:
                    value = self.make_tensor(frame[5], value)
                    objects[frame[5][0]] = value
                else:  # _K_FUNCTION
                    frame[1].upvalues = _user(value)
                    value = frame[1]
            else:
                return _user(value)

    def start_function(self, stack: list[list], tag: int, index: int | None, at: int) -> object:
        code = self.raw(self.i32("a function's bytecode length"), "a function's bytecode")
        fn = T7Function(tag, code)
        if index is not None:
            self.objects[index] = fn  # before the upvalues: a recursive function refers to itself
        return self.push(stack, [_K_FUNCTION, fn, 1, None, at, None])

    def read_name(self, what: str) -> bytes:
        n = self.i32(f"the length of {what}")
        if n > 1024:
            self.fail(f"{what} of {n} bytes is too long", self.pos - 4)
        return self.raw(n, what)

    def start_torch(self, stack: list[list], index: int, at: int) -> Any:
        """Read a torch object's class; storages are read whole, other classes push a frame."""
        first = self.read_name("a torch class version")
        version: int | float = 0
        if first.startswith(b"V "):
            version = self.versions.get(first)  # type: ignore[assignment]
            if version is None:
                m = _VERSION.match(first)
                if not m:
                    self.fail(f"bad torch class version string {first[:40]!r}", at + 8)
                v = float(m.group(1))
                version = self.versions[first] = int(v) if v.is_integer() else v
            raw_name = self.read_name("a torch class name")
        else:
            raw_name = first  # written before Torch had versioned classes
        typename = self.class_names.get(raw_name)
        if typename is None:
            typename = raw_name.decode("ascii", "replace")
            if not _CLASS_NAME.match(typename):
                self.fail(f"bad torch class name {raw_name[:60]!r}", self.pos - len(raw_name))
            self.class_names[raw_name] = typename

        dtype = _STORAGE_CLASSES.get(typename)
        if dtype is not None:
            storage = self.objects[index] = self.read_storage(typename, dtype)
            return storage
        dtype = _TENSOR_CLASSES.get(typename)
        if dtype is not None:
            sizes, strides, offset = self.read_tensor_header(typename, at)
            self.objects[index] = _Pending(typename)  # replaced by the array once its storage is read
            info = (index, typename, dtype, sizes, strides, offset, at)
            return self.push(stack, [_K_TENSOR, None, 1, None, at, info])
        obj = self.objects[index] = T7Object(typename, version=version)  # registered first: cycles
        return self.push(stack, [_K_OBJECT, obj, 1, None, at, None])

    def file_dtype(self, dtype: str) -> np.dtype:
        if dtype == "<i8" and self.long_size == 4:
            return np.dtype("<i4")
        return np.dtype(dtype)

    def read_storage(self, typename: str, dtype: str) -> _Storage:
        at = self.pos
        count = self.long(f"the size of a {typename}")
        if count < 0:
            self.fail(f"{typename} with negative size {count}", at)
        fdt = self.file_dtype(dtype)
        nbytes = count * fdt.itemsize
        left = self.end - self.pos
        if nbytes > left:
            self.fail(f"truncated while reading a {typename} of {count} elements "
                      f"({nbytes} bytes needed, {left} left)")
        view = np.frombuffer(self.buf, dtype=fdt, count=count, offset=self.pos)
        self.pos += nbytes
        return _Storage(typename, view, np.dtype(dtype).newbyteorder("="))

    def read_tensor_header(self, typename: str, at: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        ndim = self.i32(f"the dimension count of a {typename}")
        if not 0 <= ndim <= MAX_TENSOR_DIMS:
            self.fail(f"{typename} with {ndim} dimensions (0..{MAX_TENSOR_DIMS} allowed)", self.pos - 4)
        sizes = self.longs(ndim, f"the sizes of a {typename}")
        strides = self.longs(ndim, f"the strides of a {typename}")
        offset = self.long(f"the storage offset of a {typename}") - 1  # stored 1-based
        for s in sizes:
            if s < 0:
                self.fail(f"{typename} with negative size {s}", at)
        return sizes, strides, offset

    def make_tensor(self, info: tuple, storage: Any) -> np.ndarray:
        """The tensor described by ``info`` as a C-contiguous copy out of ``storage``."""
        _, typename, dtype, sizes, strides, offset, at = info
        out_dtype = np.dtype(dtype).newbyteorder("=")
        # Checked even for empty tensors, so that nothing but a storage can hide in that slot.
        if storage is not None and (type(storage) is not _Storage or storage.dtype != out_dtype):
            self.fail(f"the storage of the {typename} from byte {at} is {_describe(storage)}")
        if not sizes:
            return np.empty(0, dtype=out_dtype)
        shape = tuple(sizes)
        numel = math.prod(sizes)
        if numel == 0:
            try:
                return np.empty(shape, dtype=out_dtype)
            except (ValueError, MemoryError):
                self.fail(f"{typename} of shape {shape} is too large", at)
        if storage is None:
            self.fail(f"{typename} of shape {shape} (from byte {at}) has no storage")
        nbytes = numel * out_dtype.itemsize
        if nbytes > self.budget:
            self.fail(f"{typename} of shape {shape} would need {nbytes} bytes: tensor copies exceed "
                      f"max_expansion times the file size", at)
        self.budget -= nbytes
        view = storage.view
        length = view.shape[0]
        lo = hi = offset
        for s, st in zip(sizes, strides):
            reach = (s - 1) * st
            if reach < 0:
                lo += reach
            else:
                hi += reach
        if lo < 0 or hi >= length:
            self.fail(f"{typename} of shape {shape}, strides {tuple(strides)} and offset {offset + 1} reaches "
                      f"outside its storage of {length} elements", at)
        # A C-contiguous tensor is a slice of its storage; anything else goes through as_strided
        # (safe: the whole reach was checked above).
        expected = 1
        contiguous = True
        for s, st in zip(reversed(sizes), reversed(strides)):
            if s != 1 and st != expected:
                contiguous = False
                break
            expected *= s
        if contiguous:
            src = view[offset:offset + numel].reshape(shape)
        else:
            item = view.dtype.itemsize
            src = np.lib.stride_tricks.as_strided(
                view[offset:], shape=shape, strides=[st * item for st in strides], writeable=False)
        return np.array(src, dtype=out_dtype, order="C", copy=True)


def load_t7(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    long_size: int = 8,
    max_expansion: float = 8.0,
    name: str | None = None,
) -> Any:
    """Read a Torch7 binary ``.t7`` file (a path, or its contents as bytes) into Python values.

    See the module docstring for the data model. ``max_depth`` bounds how deeply tables and objects may
    nest; ``long_size`` is the size of a C ``long`` in the writer (8, or 4 for Windows/32-bit files);
    ``max_expansion`` bounds the bytes of tensor copies relative to the file size; ``name`` is used in
    error messages (default: the path, or ``"<bytes>"``). Raises :class:`GradCamError` for anything that
    is not a well-formed file.
    """
    if long_size not in (4, 8):
        raise ValueError("long_size must be 4 or 8")
    if max_depth < 1:
        raise ValueError("max_depth must be at least 1")
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = memoryview(source).cast("B") if isinstance(source, memoryview) else source
        return _load(buf, name or "<bytes>", max_depth, long_size, max_expansion)
    label = name or os.fspath(source)
    if not isinstance(label, str):
        label = os.fsdecode(label)
    try:
        with open_regular(source) as f:  # a directory, pipe or device is refused, never read
            try:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):  # an empty file, or a file system without mmap
                mapped = None
                data = f.read()
    except OSError as e:
        raise GradCamError(f"{label}: cannot read: {e.strerror or e}") from None
    if mapped is None:
        return _load(data, label, max_depth, long_size, max_expansion)
    try:
        return _load(mapped, label, max_depth, long_size, max_expansion)
    finally:
        try:
            mapped.close()
        except BufferError:  # a view is still referenced (e.g. by a traceback): leave it to the GC
            pass


def _load(buf: Any, name: str, max_depth: int, long_size: int, max_expansion: float) -> Any:
    reader = _Reader(buf, name, max_depth=max_depth, long_size=long_size, max_expansion=max_expansion)
    try:
        return reader.read_root()
    except GradCamError:
        raise
    except (MemoryError, RecursionError) as e:
        raise GradCamError(f"{name}: {type(e).__name__} at byte {reader.pos}") from None
    except Exception as e:  # a reader bug must still surface as the one user-facing error type
        raise GradCamError(f"{name}: internal reader error at byte {reader.pos}: {type(e).__name__}: {e}") from None
    finally:
        reader.objects.clear()
        reader.buf = None
