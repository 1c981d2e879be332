"""The Torch7 ``.t7`` reader: the fixtures against torchfile and against what users rely on, and
synthetic files (written by a small test-only writer) for references, long sizes and hostile input."""
from __future__ import annotations

import math
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from t7_writer import Func, Obj, Storage, Tensor, sample_file, t7, tensor

from gradcam_core.errors import GradCamError
from gradcam_core.formats.torch7 import T7Function, T7Object, T7Table, load_t7

DATA = Path(__file__).resolve().parent / "data"
LSTM = DATA / "VQA_LSTM_CNN" / "lstm.t7"
CAPTION = DATA / "neuraltalk2" / "mini_caption_model.t7"


# ---------------------------------------------------------------------------------------------------
# Synthetic files (written by tests/t7_writer.py)
# ---------------------------------------------------------------------------------------------------

def raises_gradcam(data: bytes, match: str | None = None, **kw) -> GradCamError:
    with pytest.raises(GradCamError, match=match) as info:
        load_t7(data, **kw)
    message = str(info.value)
    assert "\n" not in message and "at byte" in message
    return info.value


# ---------------------------------------------------------------------------------------------------
# Fixtures: what users rely on
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def caption() -> T7Table:
    return load_t7(CAPTION)


def test_lstm_fixture_holds_three_float_vectors():
    obj = load_t7(LSTM)
    assert isinstance(obj, T7Table)
    assert {k: (v.shape, v.dtype) for k, v in obj.items()} == {
        "embedding_w_q": ((246,), np.float32),
        "encoder_w_q": ((1097,), np.float32),
        "multimodal_w": ((66250,), np.float32),
    }
    for v in obj.values():
        assert v.flags.c_contiguous and v.flags.writeable and np.isfinite(v).all()


def test_caption_model_top_level(caption):
    assert set(caption) == {"protos", "vocab", "opt"}
    assert set(caption["protos"]) == {"cnn", "lm"}
    vocab = caption["vocab"]
    assert set(vocab) == {str(i) for i in range(1, 31)}
    assert vocab["30"] == "UNK" and vocab["1"] == "a" and vocab["2"] == "dog"
    assert caption["opt"]["vocab_size"] == 30 and caption["opt"]["backend"] == "nn"
    assert caption["opt"]["dropout"] == 0.5 and isinstance(caption["opt"]["rnn_size"], int)


def test_caption_model_cnn(caption):
    cnn = caption["protos"]["cnn"]
    assert isinstance(cnn, T7Object) and cnn.typename == "nn.Sequential"
    modules = cnn["modules"].as_list()
    assert len(modules) == 40
    conv = modules[0]
    assert conv.typename == "nn.SpatialConvolution" and conv["name"] == "conv1_1"
    # This file stores conv weights 4-D: nOutputPlane x nInputPlane x kH x kW.
    assert conv["weight"].shape == (conv["nOutputPlane"], conv["nInputPlane"], conv["kH"], conv["kW"]) == (4, 3, 3, 3)
    assert conv["bias"].shape == (4,) and conv["weight"].dtype == np.float32
    names = [m.get("name") for m in modules]
    assert names[29] == "relu5_3" and names[31] == "torch_view" and names[37] == "drop7"
    assert modules[31].typename == "nn.View" and modules[31]["size"].tolist() == [-1]
    assert modules[38].typename == "nn.Linear" and modules[38]["weight"].shape == (12, 4096)
    assert modules[39].typename == "nn.ReLU"
    counts = {}
    for m in modules:
        counts[m.typename] = counts.get(m.typename, 0) + 1
    assert counts == {"nn.SpatialConvolution": 13, "nn.ReLU": 16, "nn.SpatialMaxPooling": 5, "nn.View": 1,
                      "nn.Linear": 3, "nn.Dropout": 2}


def test_caption_model_language_model(caption):
    lm = caption["protos"]["lm"]
    assert lm.typename == "nn.LanguageModel"
    assert (lm["vocab_size"], lm["input_encoding_size"], lm["rnn_size"], lm["num_layers"], lm["seq_length"],
            lm["num_state"]) == (30, 12, 16, 1, 16, 2)
    assert lm["lookup_table"].typename == "nn.LookupTable" and lm["lookup_table"]["weight"].shape == (31, 12)
    core = lm["core"]
    assert core.typename == "nn.gModule"
    modules = core["modules"].as_list()
    assert [m.typename[3:] for m in modules] == [
        "Identity", "Linear", "Identity", "Linear", "CAddTable", "Reshape", "SplitTable", "Sigmoid", "Identity",
        "CMulTable", "Sigmoid", "Tanh", "CMulTable", "CAddTable", "Sigmoid", "Tanh", "CMulTable", "Dropout",
        "Linear", "LogSoftMax"]
    by_name = {}
    for node in core["forwardnodes"].as_list():
        assert node.typename == "nngraph.Node"
        name = node["data"]["annotations"].get("name")
        if name:
            by_name[name] = node["data"]["module"]
    assert set(by_name) == {"i2h_1", "h2h_1", "decoder", "drop_final"}
    # Shared references: the nodes hold the very objects listed in core.modules.
    assert by_name["i2h_1"] is modules[1] and by_name["h2h_1"] is modules[3] and by_name["decoder"] is modules[18]
    assert by_name["i2h_1"]["weight"].shape == (64, 12) and by_name["h2h_1"]["weight"].shape == (64, 16)
    assert by_name["decoder"]["weight"].shape == (31, 16) and by_name["decoder"]["bias"].shape == (31,)
    # graph.Graph keeps node -> position entries: tables keyed by objects work.
    nodes = core["fg"]["nodes"]
    listed = [v for k, v in nodes.items() if isinstance(k, int)]
    assert all(nodes[n] == i for i, n in enumerate(listed, 1))


# ---------------------------------------------------------------------------------------------------
# Fixtures against torchfile
# ---------------------------------------------------------------------------------------------------

def _is_primitive(x: Any) -> bool:
    return x is None or isinstance(x, (bool, int, float, bytes, str))


def assert_same_as_torchfile(ref: Any, ours: Any) -> int:
    """Walk both trees together (shared/cyclic structure included); returns the number of tensors checked."""
    torchfile = pytest.importorskip("torchfile")
    seen: dict[int, Any] = {}
    todo = [(ref, ours, "root")]
    deferred = []  # (ref table, our table, ref key, ref value, path) for keys that are objects
    tensors = 0
    while todo or deferred:
        if not todo:
            progress = [d for d in deferred if id(d[2]) in seen]
            assert progress, "object keys never reached"
            for r_tab, o_tab, r_key, r_val, path in progress:
                deferred.remove((r_tab, o_tab, r_key, r_val, path))
                o_key = seen[id(r_key)]
                assert o_key in o_tab, path
                todo.append((r_val, o_tab[o_key], path + "[obj]"))
            continue
        r, o, path = todo.pop()
        if isinstance(r, bytes):
            assert o == r.decode("utf-8", "surrogateescape"), path
        elif _is_primitive(r):
            assert type(o) is type(r) and o == r, path
        elif isinstance(r, np.ndarray):
            assert isinstance(o, np.ndarray) and o.dtype == r.dtype and o.shape == r.shape, path
            np.testing.assert_array_equal(o, r, err_msg=path)
            tensors += 1
        elif id(r) in seen:
            assert seen[id(r)] is o, path  # the same sharing as torchfile found
        elif isinstance(r, torchfile.TorchObject):
            seen[id(r)] = o
            assert isinstance(o, T7Object) and o.typename == r.torch_typename().decode(), path
            todo.append((r._obj, o.fields, path + "." + o.typename))
        elif isinstance(r, dict):
            seen[id(r)] = o
            assert isinstance(o, T7Table) and len(o) == len(r), path
            for k, v in r.items():
                if _is_primitive(k):
                    ok = k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else k
                    assert ok in o, f"{path}: key {ok!r}"
                    todo.append((v, o[ok], f"{path}.{ok}"))
                else:
                    deferred.append((r, o, k, v, path))
        else:
            raise AssertionError(f"{path}: unexpected {type(r)}")
    return tensors


@pytest.mark.parametrize("path", [LSTM, CAPTION], ids=["lstm", "caption"])
def test_same_as_torchfile(path):
    torchfile = pytest.importorskip("torchfile")
    ref = torchfile.load(str(path), use_list_heuristic=False)
    assert assert_same_as_torchfile(ref, load_t7(path)) > 0


# ---------------------------------------------------------------------------------------------------
# Synthetic files: data model
# ---------------------------------------------------------------------------------------------------

def test_values_and_data_model():
    obj = load_t7(sample_file())
    assert obj["n"] == 1.5 and obj["i"] == 3 and type(obj["i"]) is int
    assert obj["s"] == "héllo" and obj["b"] is True and "nil" not in obj
    assert obj["list"].as_list() == ["a", "b"] and obj.as_list() is None
    base = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(obj["w"], base.reshape(3, 4))
    np.testing.assert_array_equal(obj["wt"], base.reshape(3, 4).T)  # strided view of the same storage
    assert obj["wt"].flags.c_contiguous
    lin = obj["lin"]
    assert lin.typename == "nn.Linear" and lin.version == 1 and "weight" in lin and lin.get("missing") is None
    assert lin["weight"].dtype == np.float64 and lin["weight"].shape == (2, 3)
    assert lin["shared"] is obj["again"]
    assert obj["size"].dtype == np.int64 and obj["size"].tolist() == [-1, 7]
    f = obj["f"]
    assert isinstance(f, T7Function) and f.tag == 8 and f.bytecode == b"\x1bLJ\x02bytecode"
    assert f.upvalues[1]["name"] == "x"
    assert obj["empty"].shape == (0,) and obj["empty"].dtype == np.float32


def test_path_bytes_bytearray_memoryview(tmp_path):
    data = sample_file()
    path = tmp_path / "small.t7"
    path.write_bytes(data)
    for src in (path, str(path), data, bytearray(data), memoryview(data)):
        assert load_t7(src)["s"] == "héllo"


def test_as_list():
    assert load_t7(t7({})).as_list() == []
    assert load_t7(t7({2: "b", 1: "a"})).as_list() == ["a", "b"]
    assert load_t7(t7({1: "a", 3: "c"})).as_list() is None
    assert load_t7(t7({1: "a", "x": 1})).as_list() is None
    assert load_t7(t7({1.5: "a"})).as_list() is None


@pytest.mark.parametrize("name,dtype", [
    ("Double", np.float64), ("Float", np.float32), ("Half", np.float16), ("Long", np.int64),
    ("Int", np.int32), ("Short", np.int16), ("Char", np.int8), ("Byte", np.uint8),
])
def test_element_types_cpu_and_cuda(name, dtype):
    arr = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    cuda = "Cuda" if name == "Float" else "Cuda" + name
    got = load_t7(t7({1: tensor(f"torch.{name}Tensor", arr), 2: tensor(f"torch.{cuda}Tensor", arr)}))
    for a in got.values():
        assert a.dtype == dtype and a.shape == (2, 3, 4)
        np.testing.assert_array_equal(a, arr)


def test_strides_offsets_and_shared_storage():
    base = np.arange(60, dtype=np.float64)
    st = Storage("torch.DoubleStorage", base)
    views = {
        "a": Tensor("torch.DoubleTensor", [3, 4], [4, 1], 1, st),
        "b": Tensor("torch.DoubleTensor", [2, 5], [10, 2], 13, st),   # every other element, offset 12
        "c": Tensor("torch.DoubleTensor", [5, 3], [1, 20], 2, st),    # transposed
        "d": Tensor("torch.DoubleTensor", [4, 2], [0, 1], 58, st),    # expanded (stride 0) at the end
        "s": st,
    }
    got = load_t7(t7(views))
    np.testing.assert_array_equal(got["a"], base[:12].reshape(3, 4))
    np.testing.assert_array_equal(got["b"], base[12:32].reshape(2, 10)[:, ::2])
    np.testing.assert_array_equal(got["c"], [[1 + i + 20 * j for j in range(3)] for i in range(5)])
    np.testing.assert_array_equal(got["d"], np.tile(base[57:59], (4, 1)))
    np.testing.assert_array_equal(got["s"], base)
    got["a"][0, 0] = -1  # copies: writing one does not change the others
    assert got["s"][0] == 0


def test_shared_references_are_the_same_object():
    leaf = {"x": 1}
    mod = Obj("nn.Linear", {"weight": tensor("torch.FloatTensor", np.ones(3, np.float32))})
    got = load_t7(t7({"a": leaf, "b": leaf, "m1": mod, "list": {1: mod, 2: leaf}}))
    assert got["a"] is got["b"] is got["list"][2]
    assert got["m1"] is got["list"][1]


def test_cyclic_tables_and_objects():
    table: dict = {"name": "root"}
    table["self"] = table
    node = Obj("nngraph.Node", {})
    node.fields["children"] = {1: node}
    node.fields["data"] = {"owner": table}
    table["node"] = node
    got = load_t7(t7(table))
    assert got["self"] is got
    assert got["node"]["children"][1] is got["node"] and got["node"]["data"]["owner"] is got
    keyed = load_t7(t7({1: node, 2: {node: "value"}}))
    assert keyed[2][keyed[1]] == "value"  # objects (and tables) hash by identity: they work as keys


def test_functions_of_every_tag():
    inner = Func(6, b"plain", {1: 5})
    rec = Func(8, b"recursive", {})
    rec.upvalues[1] = {"name": "self", "id": 1, "value": rec}
    legacy = Func(7, b"legacy", {1: "up"})
    got = load_t7(t7({1: inner, 2: rec, 3: legacy, 4: rec}))
    assert [got[i].tag for i in (1, 2, 3)] == [6, 8, 7]
    assert got[1].bytecode == b"plain" and got[1].upvalues[1] == 5
    assert got[2].upvalues[1]["value"] is got[2] is got[4]
    assert got[3].upvalues.as_list() == ["up"]


def test_unversioned_class_and_versions():
    got = load_t7(t7({1: Obj("nn.Tanh", {"a": 1}, version=None), 2: Obj("nn.Tanh", {}, version="V 2")}))
    assert got[1].typename == "nn.Tanh" and got[1].version == 0 and got[1]["a"] == 1
    assert got[2].version == 2


def test_four_byte_longs():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    src = {"t": tensor("torch.FloatTensor", arr), "l": Storage("torch.LongStorage", np.array([-1, 9], np.int32))}
    got = load_t7(t7(src, long_size=4), long_size=4)
    np.testing.assert_array_equal(got["t"], arr)
    assert got["l"].dtype == np.int64 and got["l"].tolist() == [-1, 9]
    with pytest.raises(GradCamError):
        load_t7(t7(src, long_size=4))  # the same bytes read with 8-byte longs are garbage


def test_invalid_utf8_is_kept_with_surrogateescape():
    got = load_t7(t7({b"\xff\xfekey": b"va\x80lue"}))
    (k, v), = got.items()
    assert k.encode("utf-8", "surrogateescape") == b"\xff\xfekey"
    assert v.encode("utf-8", "surrogateescape") == b"va\x80lue"


def test_numbers():
    got = load_t7(t7({1: 2.0, 2: -0.5, 3: 1e300, 4: math.inf, 5: 2.0 ** 60}))
    assert got.as_list() == [2, -0.5, int(1e300), math.inf, 2 ** 60]
    assert type(got[1]) is int and type(got[4]) is float
    assert math.isnan(load_t7(t7(math.nan)))


def test_trailing_bytes_are_ignored():
    assert load_t7(t7("x") + b"junk") == "x"


def test_reader_does_not_import_torch():
    code = ("import sys; from gradcam_core.formats.torch7 import load_t7; load_t7(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(LSTM)], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------------------------
# Hostile files
# ---------------------------------------------------------------------------------------------------

def test_every_truncation_raises():
    data = sample_file()
    load_t7(data)
    for n in range(len(data)):
        raises_gradcam(data[:n])


def test_fixture_truncations_raise():
    data = LSTM.read_bytes()
    for n in (0, 3, 4, 10, 100, 1000, len(data) // 2, len(data) - 1):
        raises_gradcam(data[:n], "truncated")
    e = raises_gradcam(data[:len(data) - 5], r"truncated while reading a torch\.FloatStorage of 1097 elements")
    assert str(e).startswith("<bytes>: truncated")


def test_error_names_the_file(tmp_path):
    path = tmp_path / "lstm.t7"
    path.write_bytes(LSTM.read_bytes()[:1000])
    with pytest.raises(GradCamError, match=r"^.*lstm\.t7: truncated .* at byte \d+$"):
        load_t7(path)
    with pytest.raises(GradCamError, match=r"^checkpoint: truncated"):
        load_t7(path, name="checkpoint")
    with pytest.raises(GradCamError, match="cannot read"):
        load_t7(tmp_path / "missing.t7")
    with pytest.raises(GradCamError, match="cannot read"):
        load_t7(tmp_path)
    empty = tmp_path / "empty.t7"
    empty.write_bytes(b"")
    with pytest.raises(GradCamError, match="truncated"):
        load_t7(empty)


def test_huge_storage_fails_fast():
    data = _torch_header(b"V 1", b"torch.FloatStorage") + struct.pack("<q", 10 ** 12) + b"\0" * 64
    tracemalloc.start()
    t = time.perf_counter()
    try:
        raises_gradcam(data, r"torch\.FloatStorage of 1000000000000 elements")
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20


@pytest.mark.parametrize("case,match", [
    (b"\x09\x00\x00\x00", "unknown type tag 9"),
    (b"\xff\xff\xff\xff", "unknown type tag -1"),
    (struct.pack("<ii", 2, -5), "negative length"),
    (struct.pack("<iii", 3, 1, -1), "table of -1 entries"),
    (struct.pack("<iii", 3, 1, 10 ** 9), "table of 1000000000 entries"),
    (struct.pack("<ii", 5, 7), "bad boolean"),
    (struct.pack("<iiii", 3, 1, 1, 0) + struct.pack("<id", 1, 1.0), "nil key"),
    (struct.pack("<iii", 3, 1, 1) + struct.pack("<id", 1, math.nan) + struct.pack("<i", 0), "NaN key"),
])
def test_malformed_values(case, match):
    raises_gradcam(case, match)


def _torch_header(version: bytes, name: bytes) -> bytes:
    return struct.pack("<ii", 4, 1) + struct.pack("<i", len(version)) + version + struct.pack("<i", len(name)) + name


@pytest.mark.parametrize("case,match", [
    (_torch_header(b"V x", b"nn.Linear"), "bad torch class version"),
    (_torch_header(b"V 1", b"nn.Lin ear"), "bad torch class name"),
    (_torch_header(b"V 1", b""), "bad torch class name"),
    (struct.pack("<iii", 4, 1, 10 ** 6), "too long"),
    (_torch_header(b"V 1", b"nn.Linear") + struct.pack("<i", 1) + struct.pack("<d", 1.0), "expected a table"),
    (_torch_header(b"V 1", b"torch.FloatTensor") + struct.pack("<i", 65), "65 dimensions"),
    (_torch_header(b"V 1", b"torch.FloatTensor") + struct.pack("<i", -1), "-1 dimensions"),
    (_torch_header(b"V 1", b"torch.FloatStorage") + struct.pack("<q", -3), "negative size"),
])
def test_malformed_torch_objects(case, match):
    raises_gradcam(case, match)


@pytest.mark.parametrize("sizes,strides,offset,length,match", [
    ([3, 4], [4, 1], 1, 11, "outside its storage"),       # one element short
    ([3, 4], [4, 1], 0, 12, "outside its storage"),       # offset 0 (1-based) points before the start
    ([2, 2], [1, -1], 1, 4, "outside its storage"),       # negative stride reaching before the start
    ([3], [2 ** 62], 1, 4, "outside its storage"),        # stride overflow territory
    ([-2], [1], 1, 4, "negative size"),
    ([4], [1], 1, None, "has no storage"),
])
def test_tensor_outside_storage(sizes, strides, offset, length, match):
    st = None if length is None else Storage("torch.FloatStorage", np.zeros(length, np.float32))
    raises_gradcam(t7(Tensor("torch.FloatTensor", sizes, strides, offset, st)), match)


def test_tensor_with_negative_stride_inside_storage_reads():
    st = Storage("torch.FloatStorage", np.arange(4, dtype=np.float32))
    got = load_t7(t7(Tensor("torch.FloatTensor", [2, 2], [2, -1], 2, st)))
    np.testing.assert_array_equal(got, [[1, 0], [3, 2]])


def test_tensor_storage_type_must_match():
    st = Storage("torch.DoubleStorage", np.zeros(4))
    raises_gradcam(t7(Tensor("torch.FloatTensor", [4], [1], 1, st)), "storage of the torch.FloatTensor")
    raises_gradcam(t7(Tensor("torch.FloatTensor", [4], [1], 1, Obj("nn.Linear", {}))), "storage of")
    raises_gradcam(t7(Tensor("torch.FloatTensor", [], [], 1, {1: 2})), "storage of")  # even when empty
    no_elements = Storage("torch.FloatStorage", np.zeros(0, np.float32))
    empty = load_t7(t7(Tensor("torch.FloatTensor", [0, 3], [3, 1], 1, no_elements)))
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_tensor_that_is_its_own_storage():
    # tensor index 1 whose storage is a reference to index 1 (itself, still being read)
    data = _torch_header(b"V 1", b"torch.FloatTensor") + struct.pack("<iqqq", 1, 4, 1, 1) + struct.pack("<ii", 4, 1)
    raises_gradcam(data, "storage of")


def test_expansion_is_bounded():
    # stride 0 turns one stored float into 10^9 elements: refused before allocating
    st = Storage("torch.FloatStorage", np.zeros(1, np.float32))
    t = time.perf_counter()
    raises_gradcam(t7(Tensor("torch.FloatTensor", [10 ** 9], [0], 1, st)), "max_expansion")
    # many tensors over one big storage: each copy counts
    big = Storage("torch.FloatStorage", np.zeros(300_000, np.float32))
    many = {i: Tensor("torch.FloatTensor", [300_000], [1], 1, big) for i in range(1, 40)}
    raises_gradcam(t7(many), "max_expansion")
    assert time.perf_counter() - t < 2
    assert len(load_t7(t7(many), max_expansion=50)) == 39


def _deep(n: int) -> bytes:
    # n nested tables {1 = {1 = ... {} }} written without recursion
    out = bytearray()
    for i in range(n):
        out += struct.pack("<iii", 3, i + 1, 1) + struct.pack("<id", 1, 1.0)
    out += struct.pack("<iii", 3, n + 1, 0)
    return bytes(out)


def test_deep_nesting_is_bounded_not_recursive():
    data = _deep(100_000)
    raises_gradcam(data, "nesting deeper than 10000")
    got = load_t7(data, max_depth=200_000)  # the reader itself has no recursion limit
    depth = 0
    while got:
        got = got[1]
        depth += 1
    assert depth == 100_000
    # a back-reference cycle is not nesting: it loads at any depth bound
    cyc: dict = {}
    cyc[1] = {1: cyc}
    got = load_t7(t7(cyc), max_depth=2)
    assert got[1][1] is got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_byte_flips_only_raise_gradcam_error(data):
    original = sample_file()
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        load_t7(bytes(buf[:cut]))
    except GradCamError as e:
        assert "internal reader error" not in str(e) and "\n" not in str(e)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, CAPTION.stat().st_size - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_random_byte_flips_in_the_checkpoint(flips):
    buf = bytearray(CAPTION.read_bytes())
    for i, b in flips:
        buf[i] = b
    try:
        load_t7(bytes(buf))
    except GradCamError as e:
        assert "internal reader error" not in str(e)
