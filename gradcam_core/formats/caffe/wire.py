"""A protobuf WIRE decoder for .caffemodel files.

Python walks only the headers (tags, lengths, the small scalar fields) through a small read window.
Blob payloads - BlobProto ``data``/``diff`` (float32) and ``double_data``/``double_diff`` (float64),
packed or unpacked - are never decoded here: :meth:`WireFile.decode` records where they lie
(:class:`Segment`). A packed run of native-endian values - what Caffe writes - is then handed out as a
copy-on-write memory map of the file (:meth:`WireFile.mapped`: the page cache's pages themselves, no
copy); anything else is read by :meth:`WireFile.read` straight into the memory of the caller's final
array with ``readinto``. So a 550 MB VGG-16 file loads at disk speed and never exists twice in memory.

Unknown fields are skipped by wire type (groups included). Corrupt input - truncation, lengths past
the end of the file or of the enclosing message, bad wire types, varints longer than 10 bytes, nesting
deeper than :data:`MAX_DEPTH` - raises :class:`GradCamError` with the byte offset and what was read.
"""
from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...errors import GradCamError
from ...fileio import open_regular
from .schema import MESSAGES, Field, MessageType, Msg

#: Deepest nesting of messages/groups accepted (protobuf's own default recursion limit).
MAX_DEPTH = 100
_WINDOW = 1 << 16  # bytes read at a time while walking headers
_RUN_CHUNK = 1 << 18  # entries checked per numpy pass over an unpacked run
_VARINT_KINDS = ("int32", "uint32", "int64", "bool", "enum")
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+; Python names it from 3.13
_FIXED = {"float": (5, 4, "<f4"), "double": (1, 8, "<f8")}  # kind -> (wire type, size, numpy dtype)
# ONNX ModelProto's fields -> wire type: ir_version, producer_name/version, domain, model_version,
# doc_string, graph, opset_import, metadata_props, training_info, functions, configuration
_ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


@dataclass(frozen=True)
class Segment:
    """``count`` values of ``dtype`` ("<f4"/"<f8"), the first at byte ``offset``, each ``stride``
    bytes after the previous one (the value size when packed, tag + value size when unpacked)."""

    offset: int
    count: int
    stride: int
    dtype: str


class WireFile:
    """An open caffemodel: :meth:`decode` its headers, then :meth:`read` blob data. Use as a context
    manager (or call :meth:`close`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            self._file = open_regular(path)  # a directory, pipe or device is refused, never read
        except OSError as err:
            raise GradCamError(f"cannot read caffemodel '{path}': {err.strerror or err}") from None
        self.size = os.fstat(self._file.fileno()).st_size
        self._win = b""
        self._win_start = 0
        self._map: mmap.mmap | Literal[False] | None = None  # the whole file, copy-on-write (False: unavailable)

    def __enter__(self) -> WireFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # ---------------------------------------------------------------------------------------------
    # Decoding

    def decode(self, mtype: MessageType) -> Msg:
        """Decode the whole file as one ``mtype`` message (headers only; blob data as Segments)."""
        if self.size == 0:
            raise GradCamError(f"corrupt caffemodel '{self.path}': the file is empty")
        if self.is_onnx():
            raise GradCamError(f"'{self.path}' is an ONNX model, not a caffemodel: give it as -model_file without -proto_file")
        return self._message(mtype, 0, self.size, mtype.name, 0)

    def is_onnx(self) -> bool:
        """Whether the file is an ONNX ``ModelProto``: it starts with ``ir_version`` (field 1, a
        varint - no caffemodel does: NetParameter's field 1 is its name, a string), and its top-level
        fields are ModelProto's, with their wire types, a ``graph`` among them. Only the top-level
        tags and lengths are read (a few bytes, whatever the file's size)."""
        if self._bytes(0, 1) != b"\x08":
            return False
        pos, seen = 0, set[int]()
        try:
            while pos < self.size and len(seen) < 64:
                key, pos = self._varint(pos, self.size, "field tag", "ModelProto")
                number, wire_type = key >> 3, key & 7
                if _ONNX_MODEL_FIELDS.get(number) != wire_type:
                    return False
                value, pos = self._varint(pos, self.size, "value", "ModelProto")
                if wire_type == 2:
                    if value > self.size - pos:
                        return False
                    pos += value
                seen.add(number)
        except GradCamError:
            return False
        return 7 in seen

    def _fail(self, offset: int, what: str, context: str) -> GradCamError:
        return GradCamError(f"corrupt caffemodel '{self.path}' at byte {offset}: {what} (reading {context})")

    def _past_end(self, end: int) -> str:
        return "the end of the file" if end == self.size else "the end of its enclosing message"

    def _bytes(self, pos: int, n: int) -> bytes:
        """n bytes at pos, through the read window; the caller has checked they lie in the file."""
        if pos < self._win_start or pos + n > self._win_start + len(self._win):
            self._win, self._win_start = self._read_at(pos, max(n, _WINDOW)), pos
        start = pos - self._win_start
        return self._win[start : start + n]

    def _read_at(self, pos: int, n: int) -> bytes:
        """Up to n bytes at pos (fewer only at the end of the file)."""
        n = min(n, self.size - pos)
        try:
            self._file.seek(pos)
            data = self._file.read(n)
        except OSError as err:  # a failing disk or network file system
            raise self._fail(pos, f"read error: {err.strerror or err}", "data") from None
        if len(data) < n:
            raise self._fail(pos + len(data), "the file is shorter than when it was opened", "data")
        return data

    def _varint(self, pos: int, end: int, what: str, context: str) -> tuple[int, int]:
        buf = self._bytes(pos, min(10, end - pos))
        result = 0
        for i, byte in enumerate(buf):
            result |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return result, pos + i + 1
        if len(buf) == 10:
            raise self._fail(pos, f"{what} is a varint longer than 10 bytes", context)
        raise self._fail(pos, f"{what} runs past {self._past_end(end)}", context)

    def _fixed(self, pos: int, size: int, end: int, what: str, context: str) -> bytes:
        if end - pos < size:
            raise self._fail(pos, f"{what} ({size} bytes) runs past {self._past_end(end)}", context)
        return self._bytes(pos, size)

    def _message(self, mtype: MessageType, start: int, end: int, context: str, depth: int) -> Msg:
        if depth > MAX_DEPTH:
            raise self._fail(start, f"messages nested more than {MAX_DEPTH} deep", context)
        msg = Msg(mtype)
        pos = start
        while pos < end:
            key, body = self._varint(pos, end, "field tag", context)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                raise self._fail(pos, "field number 0", context)
            fdesc = mtype.by_number.get(number)
            where = f"{context}.{fdesc.name if fdesc else number}"
            if wire_type == 0:
                value, next_pos = self._varint(body, end, "varint value", where)
                if fdesc and fdesc.kind in _VARINT_KINDS:
                    msg.add(fdesc.name, _from_varint(value, fdesc.kind))
            elif wire_type == 2:
                length, body = self._varint(body, end, "length", where)
                if length > end - body:
                    raise self._fail(body, f"a {length}-byte field runs past {self._past_end(end)} "
                                     f"({end - body} bytes left)", where)
                if fdesc:
                    self._delimited(msg, fdesc, body, length, where, depth)
                next_pos = body + length
            elif wire_type in (1, 5):
                next_pos = self._fixed_field(msg, fdesc, pos, body, wire_type, end, where)
            elif wire_type == 3:
                next_pos = self._skip_group(number, body, end, where, depth + 1)
            else:
                raise self._fail(pos, f"invalid wire type {wire_type} for field {number}", context)
            pos = next_pos
        return msg

    def _fixed_field(self, msg: Msg, fdesc: Field | None, tag_pos: int, body: int, wire_type: int,
                     end: int, where: str) -> int:
        """A 64-bit (wire type 1) or 32-bit (5) value - or, for blob data, the whole unpacked run that
        starts here. Returns the position after it."""
        known = fdesc if fdesc is not None and fdesc.kind in _FIXED and _FIXED[fdesc.kind][0] == wire_type else None
        if known is not None and known.bulk:
            segment, next_pos = self._unpacked_run(tag_pos, body - tag_pos, known, end, where)
            msg.add(known.name, segment)
            return next_pos
        size = 8 if wire_type == 1 else 4
        raw = self._fixed(body, size, end, "fixed-size value", where)
        if known is not None:
            msg.add(known.name, float(np.frombuffer(raw, _FIXED[known.kind][2])[0]))
        return body + size

    def _delimited(self, msg: Msg, fdesc: Field, body: int, length: int, where: str, depth: int) -> None:
        """A length-delimited field: sub-message, string, packed blob data or packed scalars."""
        if fdesc.kind == "message":
            msg.add(fdesc.name, self._message(MESSAGES[fdesc.message_type], body, body + length, where, depth + 1))
        elif fdesc.kind == "string":
            msg.add(fdesc.name, self._bytes(body, length).decode("utf-8", errors="replace"))
        elif fdesc.kind in _FIXED and fdesc.repeated:
            _, size, dtype = _FIXED[fdesc.kind]
            if length % size:
                raise self._fail(body, f"packed {fdesc.kind} data of {length} bytes is not a whole number "
                                 f"of {size}-byte values", where)
            if fdesc.bulk:
                msg.add(fdesc.name, Segment(body, length // size, size, dtype))
            else:
                for value in np.frombuffer(self._bytes(body, length), dtype).tolist():
                    msg.add(fdesc.name, value)
        elif fdesc.kind in _VARINT_KINDS and fdesc.repeated:
            pos, end = body, body + length
            while pos < end:
                value, pos = self._varint(pos, end, "packed varint", where)
                msg.add(fdesc.name, _from_varint(value, fdesc.kind))

    def _unpacked_run(self, start: int, tag_len: int, fdesc: Field, end: int, where: str) -> tuple[Segment, int]:
        """An unpacked repeated float/double field: one tag + value per element. The consecutive
        entries with the same tag are found in bulk with numpy, not one by one."""
        _, size, dtype = _FIXED[fdesc.kind]
        entry = tag_len + size
        available = (end - start) // entry
        if available == 0:
            raise self._fail(start + tag_len, f"{fdesc.kind} value runs past {self._past_end(end)}", where)
        tag = np.frombuffer(self._bytes(start, tag_len), np.uint8)
        count = 0
        while count < available:
            n = min(available - count, _RUN_CHUNK)
            raw = np.frombuffer(self._read_at(start + count * entry, n * entry), np.uint8)
            same = (raw.reshape(n, entry)[:, :tag_len] == tag).all(axis=1)
            if not same.all():
                count += int(np.argmin(same))
                break
            count += n
        return Segment(start + tag_len, count, entry, dtype), start + count * entry

    def _skip_group(self, number: int, pos: int, end: int, context: str, depth: int) -> int:
        """Skip a (deprecated) group up to its end-group tag; returns the position after that tag."""
        if depth > MAX_DEPTH:
            raise self._fail(pos, f"groups nested more than {MAX_DEPTH} deep", context)
        while pos < end:
            key, body = self._varint(pos, end, "field tag", context)
            inner, wire_type = key >> 3, key & 7
            if wire_type == 0:
                pos = self._varint(body, end, "varint value", context)[1]
            elif wire_type in (1, 5):
                size = 8 if wire_type == 1 else 4
                self._fixed(body, size, end, "fixed-size value", context)
                pos = body + size
            elif wire_type == 2:
                length, body = self._varint(body, end, "length", context)
                if length > end - body:
                    raise self._fail(body, f"a {length}-byte field runs past {self._past_end(end)}", context)
                pos = body + length
            elif wire_type == 3:
                pos = self._skip_group(inner, body, end, context, depth + 1)
            elif wire_type == 4 and inner == number:
                return body
            else:
                raise self._fail(pos, f"invalid wire type {wire_type} for field {inner} inside a group", context)
        raise self._fail(pos, f"group {number} is not closed before {self._past_end(end)}", context)

    # ---------------------------------------------------------------------------------------------
    # Blob data

    def mapped(self, segments: tuple[Segment, ...] | list[Segment], count: int) -> np.ndarray | None:
        """The ``count`` values of ``segments`` as a copy-on-write view of the file (``mmap``), when
        they are one packed run of native-endian values; else None (then use :meth:`read`).

        The file's pages are mapped from the page cache (read from disk first if they are not there),
        without a copy and without private memory until written to. (As with any memory-mapped
        weights, the file must not be truncated while the model is in use.)"""
        if len(segments) != 1:
            return None
        seg = segments[0]
        dtype = np.dtype(seg.dtype)
        if seg.count != count or seg.stride != dtype.itemsize or not dtype.isnative or count == 0:
            return None
        if self._map is None:
            self._map = self._populated_map()
        if self._map is False:
            return None
        if seg.offset + count * dtype.itemsize > len(self._map):  # the file shrank since it was opened
            raise self._fail(seg.offset, "the file is shorter than when it was opened", "blob data")
        return np.frombuffer(self._map, dtype, count, seg.offset)

    def _populated_map(self) -> mmap.mmap | Literal[False]:
        """The file mapped copy-on-write, its pages made present now (``MADV_POPULATE_READ``), so that
        a disk error is a clean error here rather than a SIGBUS in the middle of a forward. False
        where that cannot be had (no mmap, a kernel before 5.14): then the data is read instead."""
        try:
            mapping = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            return False
        try:
            mapping.madvise(_MADV_POPULATE_READ, 0, len(mapping))
        except OSError as err:
            mapping.close()
            if err.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported: read instead
                return False
            raise self._fail(0, f"read error: {err.strerror or err}", "blob data") from None
        return mapping

    def read(self, segments: tuple[Segment, ...] | list[Segment], out: np.ndarray) -> None:
        """Read the values of ``segments`` into ``out`` (1-D, C-contiguous, of the segments' dtype and
        total length) - directly into its memory when the values are packed."""
        pos = 0
        for seg in segments:
            dest = out[pos : pos + seg.count]
            if seg.stride == dest.itemsize:
                self._readinto(dest.view(np.uint8), seg.offset)
            else:
                self._read_strided(seg, dest)
            pos += seg.count

    def _readinto(self, dest: np.ndarray, offset: int) -> None:
        view = dest.data  # (a memoryview of the array's bytes)
        done = 0
        try:
            self._file.seek(offset)
            while done < len(view):
                n = self._file.readinto(view[done:])
                if not n:
                    break
                done += n
        except OSError as err:
            raise self._fail(offset + done, f"read error: {err.strerror or err}", "blob data") from None
        if done < len(view):
            raise self._fail(offset + done, "the file is shorter than when it was opened", "blob data")

    def _read_strided(self, seg: Segment, dest: np.ndarray) -> None:
        itemsize = dest.itemsize
        for first in range(0, seg.count, _RUN_CHUNK):
            n = min(_RUN_CHUNK, seg.count - first)
            raw = self._read_at(seg.offset + first * seg.stride, (n - 1) * seg.stride + itemsize)
            dest[first : first + n] = np.ndarray((n,), seg.dtype, raw, 0, (seg.stride,))


def _from_varint(value: int, kind: str) -> int | bool:
    """A decoded varint as ``kind``: int32/enum and int64 are two's complement over 64 bits."""
    if kind == "bool":
        return value != 0
    if kind == "uint32":
        return value & 0xFFFFFFFF
    if kind == "int64":
        value &= (1 << 64) - 1
        return value - (1 << 64) if value >> 63 else value
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value

