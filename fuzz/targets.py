"""The fuzz targets: one function per reader, each taking the raw bytes of one input.

Contract: every input either loads or raises :class:`GradCamError` with a one-line
message; anything else - another exception, a GradCamError that only wraps a reader bug ("internal
reader error", a MemoryError or RecursionError turned into a message), a hang, an allocation beyond
the runner's memory cap - is a crash. :func:`run_one` applies that contract; the runner
(``fuzz/run.py``) adds the per-input time and memory bounds.

Targets that read a file (the Caffe loader and the neuraltalk2/VQA loaders take paths) write the input
to a scratch file (on a RAM disk when there is one), removed as soon as the input is done.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import caffe_writer as write  # tests/caffe_writer.py (fuzz/run.py puts tests/ on sys.path)
import numpy as np

from gradcam_core.caffe import load_caffe
from gradcam_core.errors import GradCamError
from gradcam_core.formats.caffe import prototxt, schema, wire
from gradcam_core.formats.torch7 import T7Object, load_t7
from gradcam_core.formats.torch7.modules import sequential_to_net
from gradcam_core.tasks import caption as captioner
from gradcam_core.tasks import vqa

FUZZ_DIR = Path(__file__).resolve().parent
FIXTURES = FUZZ_DIR / "fixtures"
CORPUS = FUZZ_DIR / "corpus"

#: The fixed halves of the Caffe targets (fuzzed caffemodel + this prototxt, and the other way round).
FIXED_PROTOTXT = FIXTURES / "tiny_v2.prototxt"
FIXED_CAFFEMODEL = FIXTURES / "tiny_v2.caffemodel"
#: The vocabulary and model options the VQA target loads its fuzzed lstm.t7 with.
VQA_VOCAB = FIXTURES / "vqa_vocab.json"
VQA_SIZES = vqa.VQASizes(input_encoding_size=2, rnn_size=2, rnn_layers=1, common_embedding_size=1, num_output=2)

#: Words in a GradCamError that show it only wraps a bug of the reader.
WRAPPED_BUGS = ("internal reader error", "MemoryError", "RecursionError")


class Crash(AssertionError):
    """An input broke the contract (raised for GradCamErrors that hide a bug or are not one line)."""


@dataclass(frozen=True)
class Target:
    """A fuzz target: ``name`` (also its corpus folder), what it fuzzes, and the function."""

    name: str
    about: str
    load: Callable[[bytes], object]


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


_SCRATCH = _scratch_dir() / f"gradcam-fuzz-{os.getpid()}"


@contextlib.contextmanager
def scratch_file(data: bytes, suffix: str) -> Iterator[Path]:
    """``data`` in a file for the length of the ``with`` block."""
    path = _SCRATCH.with_name(_SCRATCH.name + suffix)
    path.write_bytes(data)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# The targets


def _wire(data: bytes) -> object:
    """The raw decoder: headers, the V1/V2 interpretation, then every blob's values read."""
    with scratch_file(data, ".caffemodel") as path, wire.WireFile(path) as source:
        net = schema.interpret_net(source.decode(schema.NET_PARAMETER), "fuzz.caffemodel")
        for layer in net.layers:
            for blob in layer.blobs:
                source.read(blob.data, np.empty(sum(seg.count for seg in blob.data), blob.dtype))
    return net


def _caffemodel(data: bytes) -> object:
    with scratch_file(data, ".caffemodel") as path:
        return load_caffe(FIXED_PROTOTXT, path)


def _prototxt(data: bytes) -> object:
    """The text parser, typing against NetParameter, and the V1/V2 interpretation."""
    text = data.decode("utf-8", errors="replace")  # as parse_file reads a file
    tree = prototxt.to_msg(prototxt.parse(text, "fuzz.prototxt"), schema.NET_PARAMETER, "fuzz.prototxt")
    return schema.interpret_net(tree, "fuzz.prototxt", with_blobs=False)


def _net_caffemodel() -> Path:
    """The prototxt_net target's caffemodel: the fixed one plus weights for the DAG seeds' layers named
    dag_* (seed-dag-*.prototxt). Written once per process next to the scratch file; two serialised
    NetParameters one after the other are one message whose layer lists are joined."""
    path = _SCRATCH.with_name(_SCRATCH.name + "-net.caffemodel")
    if not path.exists():
        def values(*shape: int) -> np.ndarray:
            n = int(np.prod(shape))
            return (np.sin(np.arange(1, n + 1)) * 0.5).astype(np.float32).reshape(shape)

        extra = [
            {"name": "dag_conv", "type": "Convolution", "blobs": [values(4, 3, 3, 3), values(4)]},
            {"name": "dag_bn", "type": "BatchNorm", "blobs": [values(4), np.abs(values(4)) + 0.5, np.ones(1, np.float32)]},
            {"name": "dag_scale", "type": "Scale", "blobs": [values(4) + 1, values(4)]},
            {"name": "dag_prelu", "type": "PReLU", "blobs": [np.abs(values(2))]},
            {"name": "dag_deconv", "type": "Deconvolution", "blobs": [values(4, 2, 2, 2), values(2)]},
            {"name": "dag_bias", "type": "Bias", "blobs": [values(2)]},
        ]
        added = write.write_caffemodel(path.with_suffix(".part"), extra)
        path.write_bytes(FIXED_CAFFEMODEL.read_bytes() + added.read_bytes())
        added.unlink()
        atexit.register(path.unlink, missing_ok=True)
    return path


def _prototxt_net(data: bytes) -> object:
    with scratch_file(data, ".prototxt") as path:
        return load_caffe(path, _net_caffemodel())


def _t7(data: bytes) -> object:
    """The reader, then (when the file holds one) an nn.Sequential converted to modules."""
    root = load_t7(data)
    if isinstance(root, T7Object) and root.typename == "nn.Sequential":
        return sequential_to_net(root)
    return root


def _captioner(data: bytes) -> object:
    with scratch_file(data, ".t7") as path:
        return captioner.load_checkpoint(path)


def _vqa(data: bytes) -> object:
    with scratch_file(data, ".t7") as path:
        return vqa.load_answerer(path, vqa.load_vocabulary(VQA_VOCAB), VQA_SIZES)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("wire", "caffemodel wire decoder (headers, V1/V2 interpretation, blob reads)", _wire),
        Target("caffemodel", "load_caffe(fixed prototxt, fuzzed caffemodel)", _caffemodel),
        Target("prototxt", "prototxt parser + typing + V1/V2 interpretation", _prototxt),
        Target("prototxt_net", "load_caffe(fuzzed prototxt, fixed caffemodel)", _prototxt_net),
        Target("t7", "Torch7 reader (+ nn.Sequential -> modules)", _t7),
        Target("captioner", "neuraltalk2 checkpoint loader (captioner.load_checkpoint)", _captioner),
        Target("vqa", "VQA lstm.t7 loader (vqa.load_answerer)", _vqa),
    )
}


def run_one(target: Target, data: bytes) -> bool:
    """Run one input through ``target``: True when it loaded, False when it was refused with a proper
    GradCamError. Raises :class:`Crash` for a GradCamError that breaks the contract; any other
    exception propagates (the fuzzer reports it)."""
    try:
        target.load(data)
    except GradCamError as err:
        message = str(err)
        if not message or "\n" in message or any(word in message for word in WRAPPED_BUGS):
            raise Crash(f"{target.name}: GradCamError hiding a bug: {message[:500]}") from err
        return False
    return True


def _meanfile(data: bytes) -> object:
    """The Caffe mean file reader, then the mean (when it has 3 channels) fitted to and subtracted
    from an input of another size."""
    import torch

    from gradcam_core.formats.caffe import meanfile
    from gradcam_core.image.preprocessing import Preprocessing

    with scratch_file(data, ".binaryproto") as path:
        mean = meanfile.read_mean(path)
    if mean.shape[0] == 3:
        Preprocessing.caffe_vgg().with_mean_image(mean).apply(torch.zeros(3, 5, 7))
    return mean


TARGETS["meanfile"] = Target("meanfile", "Caffe mean file reader (meanfile.read_mean) + the mean applied", _meanfile)
