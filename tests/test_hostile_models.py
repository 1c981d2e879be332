"""Hostile model files: each reader either loads or refuses with ONE GradCamError line naming
the place - the file and byte for binary files, file:line for prototxt, the layer or module otherwise.
Truncations at every field boundary, flipped bytes, lengths past the end, 10^12-element claims (refused
before allocating), wrong wire types, deep nesting, unknown layer types, broken net graphs, pipes and
devices given as model files, and the fuzzer's crash inputs kept in fuzz/corpus.

The nets are the fuzzer's: fuzz/fixtures/tiny_v2.{prototxt,caffemodel} and the tiny neuraltalk2 / VQA
checkpoints of fuzz/corpus.
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import signal
import string
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import caffe_writer as write
import numpy as np
import pytest
import torch
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from t7_writer import Obj, Storage, Tensor, t7

from gradcam_core import image as imageops
from gradcam_core.caffe import load_caffe
from gradcam_core.errors import GradCamError
from gradcam_core.fileio import open_regular
from gradcam_core.formats.caffe import prototxt, schema, wire
from gradcam_core.formats.torch7 import load_t7
from gradcam_core.nets import registry
from gradcam_core.tasks import caption as captioner
from gradcam_core.tasks import vqa

sys.path.insert(0, str(ROOT / "fuzz"))
import targets  # noqa: E402  (fuzz/targets.py: the fuzz targets and their contract)

PROTO, MODEL = targets.FIXED_PROTOTXT, targets.FIXED_CAFFEMODEL
LAYERS = registry.types("caffe")
CAPTION = targets.CORPUS / "captioner" / "seed-tiny.t7"
VQA_MODEL = targets.CORPUS / "vqa" / "seed-tiny.t7"
HOSTILE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def refusal(load: Callable[..., object], *args: object) -> str | None:
    """None when ``load(*args)`` loads; else its GradCamError message, checked to be one line that does
    not merely wrap a bug. Any other exception fails the test."""
    try:
        load(*args)
    except GradCamError as err:
        message = str(err)
        assert message and "\n" not in message, message
        assert not any(word in message for word in targets.WRAPPED_BUGS), message
        return message
    return None


def load_vqa(path: Path) -> object:
    return vqa.load_answerer(path, vqa.load_vocabulary(targets.VQA_VOCAB), targets.VQA_SIZES)


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------------
# A minimal walk of the protobuf wire format, to find every field of the caffemodel


@dataclass(frozen=True)
class WireField:
    """One field: its tag's offset, the offset of its length varint (wire type 2), of its value and
    after its value."""

    tag: int
    wire_type: int
    length_at: int | None
    body: int
    end: int


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def wire_fields(data: bytes, mtype: schema.MessageType = schema.NET_PARAMETER, start: int = 0,
                end: int | None = None, descend: bool = True) -> list[WireField]:
    """Every field of a well-formed message, and with ``descend`` those of the sub-messages the schema
    declares."""
    end = len(data) if end is None else end
    fields, pos = [], start
    while pos < end:
        key, body = _varint(data, pos)
        wire_type, length_at = key & 7, None
        if wire_type == 0:
            after = _varint(data, body)[1]
        elif wire_type == 2:
            length_at = body
            length, body = _varint(data, body)
            after = body + length
            fdesc = mtype.by_number.get(key >> 3)
            if descend and fdesc is not None and fdesc.kind == "message":
                fields += wire_fields(data, schema.MESSAGES[fdesc.message], body, after)
        else:
            after = body + (8 if wire_type == 1 else 4)
        fields.append(WireField(pos, wire_type, length_at, body, after))
        pos = after
    return fields


def with_file(tmp_path: Path, data: bytes, name: str = "hostile.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------
# Truncations, flipped bytes, lengths past the end


def test_every_field_boundary_truncation_of_a_caffemodel_names_file_and_byte(tmp_path):
    data = MODEL.read_bytes()
    cuts = sorted({p for f in wire_fields(data) for p in (f.tag, f.body, f.end)} - {0, len(data)})
    between_layers = {f.end for f in wire_fields(data, descend=False)}
    assert len(cuts) > 100
    for cut in cuts:
        path = with_file(tmp_path, data[:cut])
        message = refusal(load_caffe, PROTO, path)
        if cut in between_layers:  # a valid, shorter net: loads when the weighted layers are all there
            assert message is None or re.search(r"layer '\w+' \(\w+\) has no weights in '.*'$", message), message
        else:  # inside a field: the byte where the file breaks off
            assert message and re.search(rf"^corrupt caffemodel '{path}' at byte \d+: .*runs past the end of the file",
                                         message), (cut, message)


@HOSTILE
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_a_truncated_checkpoint_names_file_and_byte(tmp_path, fraction):
    for source, load in ((CAPTION, captioner.load_checkpoint), (VQA_MODEL, load_vqa)):
        data = source.read_bytes()
        path = with_file(tmp_path, data[: int(fraction * len(data))], "cut.t7")
        message = refusal(load, path)
        assert message is not None and str(path) in message and re.search(r"at byte \d+", message), message


@HOSTILE
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes_load_or_are_refused_in_one_line(tmp_path, flips):
    for source, load in ((MODEL, lambda p: load_caffe(PROTO, p)), (PROTO, lambda p: load_caffe(p, MODEL)),
                         (CAPTION, captioner.load_checkpoint), (VQA_MODEL, load_vqa)):
        buf = bytearray(source.read_bytes())
        for where, value in flips:
            buf[int(where * len(buf))] = value
        refusal(load, with_file(tmp_path, bytes(buf), "flipped" + source.suffix))


def test_every_length_claiming_more_than_the_file_holds_is_refused(tmp_path):
    data = MODEL.read_bytes()
    lengths = [f for f in wire_fields(data) if f.length_at is not None]
    assert len(lengths) > 30
    for field in lengths:
        claim = len(data) + 1 - field.body  # one byte more than what is left after the length
        patched = data[: field.length_at] + write.varint(claim) + data[field.body :]
        message = refusal(load_caffe, PROTO, with_file(tmp_path, patched))
        assert message and re.search(rf"at byte \d+: a {claim}-byte field runs past the end of", message), message


def test_a_storage_claiming_more_than_the_file_holds_is_refused_by_both_checkpoint_loaders(tmp_path):
    data = VQA_MODEL.read_bytes()
    name = b"torch.FloatStorage"
    at = data.index(name) + len(name)  # the storage's element count (a C long) follows its class name
    patched = data[:at] + struct.pack("<q", 10**12) + data[at + 8 :]
    message = refusal(load_vqa, with_file(tmp_path, patched, "claims.t7"))
    assert message and "FloatStorage of 1000000000000 elements" in message
    message = refusal(captioner.load_checkpoint, with_file(tmp_path, patched, "claims.t7"))
    assert message and "not a neuraltalk2 checkpoint" in message and "1000000000000 elements" in message


# --------------------------------------------------------------------------------------------------
# Claims of 10^12 elements: refused before anything is allocated


def _legacy_claim(tmp_path: Path) -> tuple[Path, Path]:
    blob = {"num": 10**6, "channels": 10**6, "height": 1, "width": 1, "data": np.zeros(4, np.float32)}
    return PROTO, write.write_binary(tmp_path / "v1.caffemodel", {"layers": [{"name": "fc", "blobs": [blob]}]})


def _vqa_tensor_claim(tmp_path: Path) -> tuple[Path]:
    storage = Storage("torch.FloatStorage", np.zeros(4, np.float32))
    huge = Tensor("torch.FloatTensor", [10**6, 10**6], [0, 0], 1, storage)  # strides 0: inside the storage
    model = {"embedding_w_q": huge, "encoder_w_q": huge, "multimodal_w": huge}
    return (with_file(tmp_path, t7(model), "lstm.t7"),)


def _prototxt_claim(tmp_path: Path) -> tuple[Path, Path]:
    text = PROTO.read_text().replace("num_output: 3", "num_output: 4000000000")
    return with_file(tmp_path, text.encode(), "huge.prototxt"), MODEL


@pytest.mark.parametrize("make, load, expected", [
    (_legacy_claim, load_caffe,
     r"layer 'fc' blob 0 declares shape \(1000000, 1000000, 1, 1\) \(1000000000000 values\)"),
    (_vqa_tensor_claim, load_vqa, r"torch.FloatTensor of shape \(1000000, 1000000\) would need 4000000000000 bytes"),
    (_prototxt_claim, load_caffe, r"layer 'fc' \(InnerProduct\) blob 0 \(weight\): expected shape \(4000000000, 8\)"),
], ids=["caffemodel V1 dims", "lstm.t7 tensor", "prototxt num_output"])
def test_a_claim_of_a_trillion_values_is_refused_before_allocating(tmp_path, make, load, expected):
    args = make(tmp_path)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refusal(load, *args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message and re.search(expected, message), message
    assert peak < 50 << 20 and time.perf_counter() - started < 5


# --------------------------------------------------------------------------------------------------
# Wire types, nesting


def test_any_field_with_a_wrong_wire_type_loads_or_is_refused_in_one_line():
    data = MODEL.read_bytes()
    for field in wire_fields(data):
        key, body = _varint(data, field.tag)
        for wire_type in set(range(8)) - {key & 7}:
            patched = data[: field.tag] + write.varint((key & ~7) | wire_type) + data[body:]
            message = refusal(targets.TARGETS["wire"].load, patched)
            if wire_type in (6, 7):
                assert message and re.search(rf"at byte \d+: invalid wire type {wire_type}", message), message


@pytest.mark.parametrize("opener, closer", [("layer {", "}"), ("layer <", ">"), ("layer: {", "}"), ("layer [{", "}]")])
def test_prototxt_nesting_is_bounded_not_recursed(tmp_path, opener, closer):
    deep = with_file(tmp_path, f"name: 'x'\n{opener * 5000}{closer * 5000}".encode(), "deep.prototxt")
    assert refusal(load_caffe, deep, MODEL) == f"{deep}:2: messages nested more than 100 deep"
    ok = prototxt.parse(f"{opener * 100}{closer * 100}")  # 100 levels are fine
    assert list(ok.fields) == ["layer"]


# --------------------------------------------------------------------------------------------------
# Unknown layer types, broken graphs


@HOSTILE
@given(type_=st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=12))
def test_an_unknown_layer_type_is_named_with_its_layer(tmp_path, type_):
    text = PROTO.read_text().replace('type: "ReLU"', f'type: "{type_}"')
    message = refusal(load_caffe, with_file(tmp_path, text.encode(), "odd.prototxt"), MODEL)
    if type_ not in LAYERS:
        assert message and f"layer 'relu1' has type '{type_}', which is not supported" in message, message


def test_an_unknown_numeric_v1_type_is_named_with_its_layer(tmp_path):
    text = targets.FIXTURES.joinpath("tiny_v1.prototxt").read_text().replace("type: RELU", "type: 77")
    message = refusal(load_caffe, with_file(tmp_path, text.encode(), "v1.prototxt"), MODEL)
    assert message and "layer 'relu1' has type 'V1 type 77', which is not supported" in message


@pytest.mark.parametrize("edit, expected", [
    # a bottom nothing produces
    (('bottom: "norm1"', 'bottom: "nowhere"'), "layer 'pool1' reads blob 'nowhere', which no earlier layer produces"),
    # a cycle: conv1 reads pool1's output, which needs conv1's
    (('bottom: "data"\n  top: "conv1"', 'bottom: "pool1"\n  top: "conv1"'),
     "layer 'conv1' reads blob 'pool1', which no earlier layer produces"),
    # a layer reading its own output
    (('bottom: "pool1"', 'bottom: "conv2"'), "layer 'conv2' reads blob 'conv2', which no earlier layer produces"),
])
def test_missing_bottoms_and_cycles_are_refused_naming_the_layer(tmp_path, edit, expected):
    text = PROTO.read_text()
    assert edit[0] in text
    message = refusal(load_caffe, with_file(tmp_path, text.replace(edit[0], edit[1], 1).encode(), "g.prototxt"), MODEL)
    assert message and message.endswith(expected), message


def test_a_torch_network_that_contains_itself_is_refused():
    seq = Obj("nn.Sequential", {})
    seq.fields["modules"] = {1: seq}
    message = refusal(targets.TARGETS["t7"].load, t7(seq))
    assert message and message.startswith("the network module 1 is a nn.Sequential, which is not supported")


# --------------------------------------------------------------------------------------------------
# Files that are not files


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "model.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("load", [
    lambda p: load_caffe(p, MODEL), lambda p: load_caffe(PROTO, p), load_t7, captioner.load_checkpoint,
    imageops.load_image,
], ids=["prototxt", "caffemodel", "t7", "captioner", "image"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_pipe_or_device_is_refused_without_reading(request, load, kind):
    path = request.getfixturevalue("fifo") if kind == "fifo" else Path("/dev/zero")
    with deadline(10):  # a FIFO without a writer blocks open(); /dev/zero never ends
        message = refusal(load, path)
    assert message and str(path) in message and "not a regular file (a device, pipe or socket)" in message


class FailingDisk:
    """A file whose reads fail with EIO after the first ``good`` ones (a failing disk or network mount)."""

    def __init__(self, real, good: int) -> None:
        self.real, self.good = real, good

    def _check(self) -> None:
        self.good -= 1
        if self.good < 0:
            raise OSError(errno.EIO, "Input/output error")

    def read(self, n: int) -> bytes:
        self._check()
        return self.real.read(n)

    def readinto(self, view) -> int:
        self._check()
        return self.real.readinto(view)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


@pytest.mark.parametrize("good, reading", [(0, "data"), (1, "blob data")], ids=["headers", "blob data"])
def test_a_read_error_in_a_caffemodel_names_file_and_byte(monkeypatch, good, reading):
    monkeypatch.setattr(wire, "open_regular", lambda path: FailingDisk(open_regular(path), good))
    monkeypatch.setattr(wire.WireFile, "mapped", lambda *args: None)  # blob data read, not mapped
    message = refusal(load_caffe, PROTO, MODEL)
    assert message and re.fullmatch(rf"corrupt caffemodel '{MODEL}' at byte \d+: read error: Input/output error "
                                    rf"\(reading {reading}\)", message), message


def test_a_disk_error_while_mapping_blob_data_is_a_clean_error_not_a_sigbus(monkeypatch):
    """Packed blobs are mapped with their pages made present at load time (MADV_POPULATE_READ), so a
    disk error surfaces there, as one line, instead of as a SIGBUS during the forward."""

    real_mmap = mmap.mmap

    class FailingMap:
        def __init__(self, *args, **kw) -> None:
            self.real = real_mmap(*args, **kw)

        def __len__(self) -> int:
            return len(self.real)

        def madvise(self, *args) -> None:
            raise OSError(errno.EIO, "Input/output error")

        def close(self) -> None:
            self.real.close()

    monkeypatch.setattr(wire.mmap, "mmap", FailingMap)
    message = refusal(load_caffe, PROTO, MODEL)
    assert message == f"corrupt caffemodel '{MODEL}' at byte 0: read error: Input/output error (reading blob data)"


def test_packed_blobs_are_mapped_and_equal_the_read_ones(monkeypatch):
    real, maps = wire.WireFile.mapped, []

    def spy(self, segments, count):
        array = real(self, segments, count)
        maps.append(array is not None and isinstance(getattr(array.base, "obj", None), mmap.mmap))
        return array

    monkeypatch.setattr(wire.WireFile, "mapped", spy)
    mapped = load_caffe(PROTO, MODEL)
    assert maps and all(maps)  # every blob of the fixture is a view of the mapped file: no copy
    monkeypatch.setattr(wire.WireFile, "mapped", lambda *args: None)
    read = load_caffe(PROTO, MODEL)
    for (name, a), (_, b) in zip(mapped.named_parameters(), read.named_parameters()):
        assert torch.equal(a, b), name


def test_an_oversized_prototxt_is_refused_before_parsing(tmp_path):
    huge = tmp_path / "huge.prototxt"
    with open(huge, "wb") as f:
        f.truncate(prototxt.MAX_BYTES + 1)  # sparse: nothing is written
    message = refusal(load_caffe, huge, MODEL)
    assert message == f"cannot read prototxt '{huge}': it is larger than 8 MiB, far beyond any net definition"


# --------------------------------------------------------------------------------------------------
# The crash inputs kept in fuzz/corpus: each one loads or is one GradCamError line

REGRESSIONS = {
    "prototxt/crash-escape-x-without-digits.prototxt": r":10: invalid escape sequence '\\\\x' in string",
    "prototxt/crash-escape-U-past-unicode.prototxt": r":1: invalid escape sequence '\\\\UFFFFFFFF' in string",
    "prototxt/crash-decimal-past-int-str-limit.prototxt":
        r":3: field 'input_dim': 1{20}\.\.\.\(5000 characters\) is out of range for int32",
    "prototxt/crash-deep-nesting.prototxt": r":1: messages nested more than 100 deep",
    "prototxt/crash-quadratic-number-regex.prototxt": r":2: unexpected character '7'",
    "prototxt_net/crash-dropout-ratio-1.5.prototxt":
        r"layer 'drop' \(Dropout\): dropout_ratio must be between 0 and 1, is 1.5",
    "t7/crash-dropout-p-1.5.t7": r"module 1 \(nn.Dropout\): dropout probability p must be between 0 and 1, is 1\.5",
    "t7/crash-view-size-nan.t7": r"module 1 \(nn.View\): field 'size' should hold whole numbers, is \[nan\]",
    "t7/crash-view-size-inf.t7": r"module 1 \(nn.Reshape\): field 'size' should hold whole numbers, is \[inf\]",
    "t7/crash-conv-planes-2e40.t7": r"\(nn.SpatialConvolution\): field 'nInputPlane' is out of range, is 1.1e\+12",
    "t7/crash-conv-planes-1e300.t7": r"\(nn.SpatialConvolution\): field 'nInputPlane' is out of range, is 1e\+300",
    "t7/crash-pool-ceil-mode-tensor.t7": None,  # loads: a tensor is true in Lua, so ceil mode is on
}


def test_every_regression_input_in_the_corpus_is_listed_here():
    found = {p.relative_to(targets.CORPUS).as_posix() for p in targets.CORPUS.glob("*/crash-*")}
    assert found == set(REGRESSIONS)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_inputs_are_refused_in_one_line_and_quickly(name):
    target = targets.TARGETS[name.split("/")[0]]
    with deadline(5):
        message = refusal(target.load, (targets.CORPUS / name).read_bytes())
    if REGRESSIONS[name] is None:
        assert message is None
    else:
        assert message and re.search(REGRESSIONS[name], message), message
