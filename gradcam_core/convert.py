"""Caffe -> ONNX: ``python -m gradcam_core.convert deploy.prototxt weights.caffemodel out.onnx``.

The net is loaded as for Grad-CAM (:func:`gradcam_core.caffe.load_caffe`) and written with torch's
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17 (10 to 17: the exporter
writes ceil-mode pooling from 10, onnx2torch 1.5.15 reads up to 17, so
:func:`gradcam_core.formats.onnx.load_onnx` takes the file back without conversion): input ``"data"``
of shape (N, C, H, W), one output named after the last Caffe layer (``"prob"`` for a deploy file
ending in Softmax). The batch axis N is dynamic.

H and W: a net that can take any input size is written with dynamic H and W. Its poolings become
ONNX's own size-generic nodes (global pooling as ``GlobalAveragePool`` / ``GlobalMaxPool``, a kernel
as ``MaxPool`` / ``AveragePool`` with Caffe's pads, ``ceil_mode`` and divisor); the rule is then
checked, not assumed: the written file, read back by ``load_onnx``, must give the Caffe net's output
(within 1e-4 of its scale) at the size to explain at and at an odd non-square size off the traced
one. A net that fails that, or cannot take those sizes (an InnerProduct fixes the size), or has a
pooling ONNX cannot express (pad over half the kernel) is written, as before, at one fixed H x W.

Metadata (``metadata_props``): :data:`META_PREPROCESSING` (JSON of
:class:`~gradcam_core.image.preprocessing.Preprocessing`'s fields: Caffe's by default),
:data:`META_INPUT_SIZE` (``"HxW"``, the size to explain at: ``--input-size``, else 224x224 for a
size-generic file, else its fixed size), :data:`META_CLASS_NAMES` (the text of the class-names file,
if there is one).

The exported graph is tidied: constant subgraphs are folded into initializers, and each layer's node
and output tensor take the Caffe layer's name (``"conv5"``, ``"relu5"``; the helper nodes of a layer
that needs several are ``"<layer>/<op>"``), so Grad-CAM on the ONNX file is asked for by the same
layer names as on the Caffe net. A Caffe layer and its ONNX twin compute the same values; note that
Caffe nets' in-place ReLUs make ``conv5`` mean the rectified blob in a Caffe net's Grad-CAM, while in
ONNX ``conv5`` is the convolution's own output (ask for ``relu5`` in both).

Bad input (files, layers the loader does not support, a size too small or too large for the net, an
opset out of range, an output path that is not a new file or - without ``--force`` - an existing
regular one) gives one line on stderr and exit code 2. The output is written to a temporary file
beside it and moved into place whole; any error or signal removes the temporary file.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import secrets
import signal
import stat
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn, Union

import torch

from .errors import GradCamError

if TYPE_CHECKING:
    from .image.preprocessing import Preprocessing

OPSET = 17
#: The opsets written: torch's exporter writes ceil-mode pooling from opset 10 on, onnx2torch
#: (:func:`gradcam_core.formats.onnx.load_onnx`) reads up to 17.
MIN_OPSET, MAX_OPSET = 10, 17
#: The largest blob (float32, batch 1) of the net at the exported input size: a larger size is
#: refused before anything runs (the export runs the net).
MAX_BLOB_BYTES = 2 << 30
#: The longest output file name, and path, in bytes (Linux's NAME_MAX and PATH_MAX).
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4095
#: The size to explain at, written for a size-generic export: the scripts' ``-input_sz`` default.
DEFAULT_EXPLAIN_SIZE = (224, 224)
#: The ``metadata_props`` keys (read by :func:`gradcam_core.formats.onnx.load_onnx`'s callers).
META_PREPROCESSING = "gradcam_core.preprocessing"
META_INPUT_SIZE = "gradcam_core.input_size"
META_CLASS_NAMES = "gradcam_core.class_names"
PathLike = Union[str, "os.PathLike[str]"]


def caffe_to_onnx(proto_file: PathLike, model_file: PathLike, out_file: PathLike, *,
                  input_size: tuple[int, int] | None = None, opset: int = OPSET,
                  preprocessing: Preprocessing | None = None,
                  synset_file: PathLike | None = None, force: bool = False) -> Path:
    """Write the Caffe net (``proto_file`` + ``model_file``) as ONNX to ``out_file``; returns its path.

    Args:
        input_size: (H, W) to trace the net at (default the prototxt's declared input size, else
            224 x 224) and the size written as the one to explain at. A net that runs at any size
            (no InnerProduct before a global pooling, every pooling expressible by ONNX's own) is
            written with dynamic H and W, checked by running the written file at other sizes against
            the Caffe net; any other net with this fixed H x W. The batch axis is always dynamic.
        opset: the ONNX opset to write, :data:`MIN_OPSET` .. :data:`MAX_OPSET`.
        preprocessing: written into the file's metadata (default Caffe's,
            ``Preprocessing.caffe_vgg()``).
        synset_file: the class names to write into the metadata (default ``synset_words.txt``
            beside ``model_file``, if there is one).
        force: replace an existing regular file at ``out_file`` (keeping its permission bits);
            without it an existing file is refused. Anything else there (a folder, FIFO, device,
            socket, symbolic link) is always refused.

    Raises GradCamError (one line) for bad input; nothing is left at ``out_file`` or beside it then.
    """
    from .extras import require

    require("onnx", "the converter (gradcam-convert) needs")
    import onnx

    from .caffe import load_caffe
    from .formats.synset import find_synset
    from .image.preprocessing import Preprocessing

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise GradCamError(f"opset {opset}: only opsets {MIN_OPSET} to {MAX_OPSET} are written")
    if input_size is not None:
        check_size_bound(*input_size)
    out = Path(out_file)
    keep_mode = check_output(out, force)
    synset = Path(synset_file) if synset_file is not None else find_synset(model_file)
    class_names = _class_names_text(synset) if synset is not None else None
    prep = preprocessing or Preprocessing.caffe_vgg()
    if prep.mean_image is not None:
        raise GradCamError("a mean image cannot be written into the ONNX metadata (give per-channel means)")

    temporary = _Temporary(out)
    try:  # the temporary file is made inside: any exception, a signal's included, removes it
        temporary.create()
        net = load_caffe(str(proto_file), str(model_file))
        spec = net.input_spec
        height, width = input_size or (spec.height or 224, spec.width or 224)
        channels = spec.channels or 3
        _check_blobs(net, channels, height, width)
        if not len(net):
            raise GradCamError(f"{proto_file}: the net has no layer to export")
        x = torch.zeros(1, channels, height, width)
        try:
            with torch.no_grad():
                net(x)  # a size the net cannot take fails here, with the layer's own message
        except GradCamError:
            raise
        except RuntimeError as exc:
            raise GradCamError(f"{proto_file}: the net cannot run on a {height}x{width} input: "
                               f"{_first_line(exc)}") from None
        _use_onnx_lrn(net)
        model = None
        checks = _generic_check_sizes(net, channels, (height, width), input_size)
        if checks and _use_onnx_pooling(net):
            try:
                model = _export(net, x, opset, proto_file, dynamic=True)
            finally:
                _use_caffe_pooling(net)  # the check compares with Caffe's own pooling
            if not _runs_as_caffe(model.SerializeToString(), temporary, net, channels, checks):
                model = None
        generic = model is not None
        if model is None:
            model = _export(net, x, opset, proto_file, dynamic=False)
        explain_size = input_size or (DEFAULT_EXPLAIN_SIZE if generic else (height, width))
        meta = {META_PREPROCESSING: preprocessing_json(prep), META_INPUT_SIZE: f"{explain_size[0]}x{explain_size[1]}"}
        if class_names is not None:
            meta[META_CLASS_NAMES] = class_names
        onnx.helper.set_model_props(model, meta)
        model.producer_name, model.doc_string = "gradcam_core.convert", f"from {Path(proto_file).name}"
        try:
            data = model.SerializeToString()
        except ValueError:  # protobuf's own limit
            raise GradCamError(f"{proto_file}: the net is too large for one ONNX file (2 GiB)") from None
        onnx.checker.check_model(data)
        temporary.write(data)
        temporary.replace(force, keep_mode)
    finally:
        temporary.discard()
    return out


def _export(net, x: torch.Tensor, opset: int, proto_file: PathLike, *, dynamic: bool):
    """The traced ONNX model of ``net``, constants folded, nodes named after the Caffe layers;
    ``dynamic``: H and W of the input (and of a 4-d output) are dynamic axes."""
    import onnx

    from .formats.onnx import fold_constants

    output_name = net.names[-1]
    axes_in, axes_out = {0: "N"}, {0: "N"}
    if dynamic:
        axes_in.update({2: "H", 3: "W"})
        with torch.no_grad():
            if net(x).dim() == 4:
                axes_out.update({2: "H_out", 3: "W_out"})
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about constant sizes: intended
            torch.onnx.export(
                net, (x,), buffer,  # type: ignore[arg-type]  # (a file object works; the stub names paths)
                dynamo=False, opset_version=opset, input_names=["data"],
                output_names=[output_name], dynamic_axes={"data": axes_in, output_name: axes_out},
                do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        raise GradCamError(f"{proto_file}: cannot export the net to ONNX: {_first_line(exc)}") from None
    model = onnx.ModelProto.FromString(buffer.getvalue())
    fold_constants(model)
    _name_after_layers(model, net.names, output_name)
    return model


def _generic_check_sizes(net, channels: int, traced: tuple[int, int],
                         given: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The sizes a size-generic export is checked at (the size to explain at when it differs from
    the traced one, and an odd non-square size off the traced one), or [] where the Caffe net cannot
    take one of them (an InnerProduct fixes the size)."""
    from .nets.graph import InputSizeError

    sizes = [traced[0] + 19, traced[1] + 34]
    checks = [tuple(sizes)]
    explain = given or DEFAULT_EXPLAIN_SIZE
    if tuple(explain) != tuple(traced):
        checks.insert(0, tuple(explain))
    try:
        for h, w in checks:
            net.check_input_size(channels, h, w)
            check_size_bound(h, w)
    except (InputSizeError, GradCamError):
        return []
    return checks  # type: ignore[return-value]


def _runs_as_caffe(data: bytes, temporary: _Temporary, net, channels: int,
                   sizes: list[tuple[int, int]]) -> bool:
    """Whether the ONNX model ``data``, read back by load_onnx (from the temporary file), gives the
    Caffe net's output at each of ``sizes``."""
    from .formats.onnx import load_onnx

    temporary.write(data)
    assert temporary.path is not None  # (write() names the file)
    try:
        back = load_onnx(temporary.path)
        for k, (h, w) in enumerate(sizes):
            x = 50 * torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(k))
            with torch.no_grad():
                want, got = net(x), back(x)
            if got.shape != want.shape:
                return False
            scale = float(want.abs().max()) or 1.0
            if not float((got - want).abs().max()) <= 1e-4 * scale:
                return False
    except Exception:  # noqa: BLE001 - any failure to run at another size: not size-generic
        return False
    return True


def _check_blobs(net, channels: int, height: int, width: int) -> None:
    """Refuse an input size whose largest blob exceeds :data:`MAX_BLOB_BYTES`, from the net's shape
    plan (arithmetic only), before the export runs the net."""
    plan: dict = {}
    try:
        net.check_input_size(channels, height, width, plan=plan)
    finally:  # the size limit first, then a layer that cannot take the size
        for blob, shape in plan.items():
            size = 4 * math.prod(shape)
            if size > MAX_BLOB_BYTES:
                raise GradCamError(f"input size {height}x{width} is too large: blob '{blob}' of the net would be "
                                   f"{_gib(size)} (the limit is {_gib(MAX_BLOB_BYTES)})")


def check_size_bound(height: int, width: int) -> None:
    """Refuse an input size below 1x1 or whose one-channel float32 input alone exceeds
    :data:`MAX_BLOB_BYTES` (before any file is read)."""
    if height < 1 or width < 1:
        raise GradCamError(f"input size {height}x{width}: must be at least 1x1")
    if 4 * height * width > MAX_BLOB_BYTES:
        raise GradCamError(f"input size {height}x{width} is too large: its input alone would be "
                           f"{_gib(4 * height * width)} per channel (the limit is {_gib(MAX_BLOB_BYTES)})")


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.3g} GiB"


def preprocessing_json(prep: Preprocessing) -> str:
    """The ``gradcam_core.preprocessing`` metadata value: JSON of channel_order, value_scale, mean
    (per channel, in the net's channel order, or null), input_scale and std (or null)."""
    return json.dumps({
        "channel_order": prep.channel_order, "value_scale": float(prep.value_scale),
        "mean": [float(v) for v in prep.mean] if prep.mean is not None else None,
        "input_scale": float(prep.input_scale),
        "std": [float(v) for v in prep.std] if prep.std is not None else None,
    })


def _class_names_text(path: Path) -> str:
    """The text of the class-names file at ``path``, once it parses as one (formats.synset)."""
    from .fileio import open_regular
    from .formats.synset import read_synset

    names = read_synset(path)  # one line naming the file for anything that is not a list of names
    try:
        with open_regular(path) as f:
            return f.read().decode("utf-8").removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError) as err:
        raise GradCamError(f"cannot read {names.source}: {getattr(err, 'strerror', None) or err}") from None


def check_output(out: Path, force: bool) -> int | None:
    """Refuse an output path that cannot or must not be written: a name longer than
    :data:`MAX_NAME_BYTES` (any component) or a path longer than :data:`MAX_PATH_BYTES`, a missing
    folder, anything but a regular file there (never followed or replaced: a symbolic link, folder,
    FIFO, device, socket), a regular file without ``force``. Returns the permission bits of the
    file to replace (``force``), else None."""
    raw = os.fsencode(out)
    if len(raw) > MAX_PATH_BYTES:
        raise GradCamError(f"output path is {len(raw)} bytes long: the limit is {MAX_PATH_BYTES}")
    for part in out.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise GradCamError(f"output '{_short(part)}': a name of {len(os.fsencode(part))} bytes "
                               f"(the limit is {MAX_NAME_BYTES})")
    if not out.name or out.name in (".", ".."):
        raise GradCamError(f"output '{out}': not a file name")
    if not out.parent.is_dir():
        raise GradCamError(f"output '{out}': folder '{out.parent}' does not exist")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GradCamError(f"output '{out}': {exc.strerror}") from None
    kind = _kind(st.st_mode)
    if kind:
        raise GradCamError(f"output '{out}' is {kind}: refused (give a regular file's path)")
    if not force:
        raise GradCamError(f"output '{out}' exists: give --force to replace it")
    return stat.S_IMODE(st.st_mode)


def _kind(mode: int) -> str:
    """What a non-regular file is ("" for a regular file)."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "" if stat.S_ISREG(mode) else "not a regular file"


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


class _LRNFunction(torch.autograd.Function):
    """``F.local_response_norm`` that the exporter writes as ONE ONNX ``LRN`` node (traced, torch's
    version becomes some 40 shape and padding nodes, an ``If`` among them that onnx2torch cannot
    read). Both sum the squares over the same channels for the odd sizes Caffe allows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        return torch.nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class _OnnxLRN(torch.nn.Module):
    """An ``nn.LocalResponseNorm`` (Caffe's ACROSS_CHANNELS LRN) exported as ONNX ``LRN``."""

    def __init__(self, lrn: torch.nn.LocalResponseNorm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)


def _use_onnx_lrn(net) -> None:
    """Swap the net's odd-sized across-channel LRNs for :class:`_OnnxLRN` (this net is only exported)."""
    for i, module in enumerate(net.layers):
        if type(module) is torch.nn.LocalResponseNorm and module.size % 2 == 1:
            net.layers[i] = _OnnxLRN(module)


class _GlobalPoolFunction(torch.autograd.Function):
    """Global MAX/AVE pooling (N, C, H, W) -> (N, C, 1, 1) written as ONNX ``GlobalMaxPool`` /
    ``GlobalAveragePool``, which take any H x W (Caffe's ``global_pooling`` has pad 0, stride 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, method: str) -> torch.Tensor:
        return x.amax((2, 3), keepdim=True) if method == "MAX" else x.mean((2, 3), keepdim=True)

    @staticmethod
    def symbolic(g, x, method: str):
        return g.op("GlobalMaxPool" if method == "MAX" else "GlobalAveragePool", x)


class _OnnxPool(torch.nn.Module):
    """A :class:`~gradcam_core.nets.modules.CaffePool2d` written as ONE size-generic ONNX pooling
    node: global pooling as ``GlobalMaxPool`` / ``GlobalAveragePool``; a kernel with pad <= kernel / 2
    as ``MaxPool`` / ``AveragePool`` with Caffe's pads and its ``ceil_mode``, whose output sizes
    (the last window starts inside the image or its top/left padding) and AVE divisor (the window
    clipped to the padded image, ``count_include_pad``) are Caffe's."""

    def __init__(self, pool) -> None:
        super().__init__()
        self.caffe = pool

    @staticmethod
    def exportable(pool) -> bool:
        return pool.kernel is None or all(2 * p <= k for p, k in zip(pool.pad, pool.kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.caffe
        if pool.kernel is None:
            return _GlobalPoolFunction.apply(x, pool.method)
        if pool.method == "MAX":
            return torch.nn.functional.max_pool2d(x, pool.kernel, pool.stride, pool.pad, ceil_mode=pool.ceil)
        return torch.nn.functional.avg_pool2d(x, pool.kernel, pool.stride, pool.pad, ceil_mode=pool.ceil,
                                              count_include_pad=True)


def _use_onnx_pooling(net) -> bool:
    """Swap the net's Caffe poolings for :class:`_OnnxPool`; False (nothing swapped) where one has no
    size-generic ONNX twin."""
    from .nets.modules import CaffePool2d

    pools = [i for i, m in enumerate(net.layers) if type(m) is CaffePool2d]
    if not all(_OnnxPool.exportable(net.layers[i]) for i in pools):
        return False
    for i in pools:
        net.layers[i] = _OnnxPool(net.layers[i])
    return True


def _use_caffe_pooling(net) -> None:
    """Undo :func:`_use_onnx_pooling`."""
    for i, module in enumerate(net.layers):
        if isinstance(module, _OnnxPool):
            net.layers[i] = module.caffe


def _name_after_layers(model, layer_names: Sequence[str], output_name: str) -> None:
    """Node and output tensor names from the Caffe layers: the exporter names a node after the
    module it comes from (``/layers.5/Relu``: module 5 of the GraphNet); the last node of each module
    computes the layer's output and takes the layer's name, the others ``<layer>/<op>``."""
    from .formats.onnx import unique_name

    graph = model.graph
    taken_tensors = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    by_module: dict[int, list] = {}
    for node in graph.node:
        match = re.match(r"/layers\.(\d+)/", node.name)
        if match and int(match.group(1)) < len(layer_names):
            by_module.setdefault(int(match.group(1)), []).append(node)
    renamed: dict[str, str] = {}
    used_nodes: set[str] = set()

    for index, nodes in sorted(by_module.items()):
        layer = layer_names[index]
        *helpers, last = nodes
        for node in helpers:
            node.name = unique_name(f"{layer}/{node.op_type}", used_nodes)
        last.name = unique_name(layer, used_nodes)
        if len(last.output) == 1 and last.output[0] != output_name and layer not in taken_tensors:
            renamed[last.output[0]] = layer
            taken_tensors.add(layer)
    for node in graph.node:
        if node.name not in used_nodes:  # a node outside the layers' scopes (none expected)
            node.name = unique_name(node.name or node.op_type, used_nodes)
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = renamed.get(value.name, value.name)


class _Temporary:
    """The file being written: a hidden ``.<name>.<random>.tmp`` in ``out``'s folder, moved into
    place by :meth:`replace`, else removed by :meth:`discard`. Its name is known before the file is
    made, so that an exception at any point (a signal made one by :func:`main`) leaves no file."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path: Path | None = None
        self.file: IO[bytes] | None = None

    def create(self) -> None:
        name = self.out.name
        while len(os.fsencode(name)) > 200:  # the temporary name stays within the name limit
            name = name[:-1]
        prefix = f".{name}."
        for _ in range(100):
            self.path = self.out.parent / f"{prefix}{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            except FileExistsError:
                self.path = None
                continue
            except OSError as exc:
                self.path = None
                raise GradCamError(f"output '{self.out}': cannot write in '{self.out.parent}' "
                                   f"({exc.strerror})") from None
            self.file = os.fdopen(fd, "wb")
            return
        raise GradCamError(f"output '{self.out}': cannot make a temporary file in '{self.out.parent}'")

    def write(self, data: bytes) -> None:
        """Make the temporary file hold exactly ``data``."""
        assert self.file is not None
        try:
            self.file.seek(0)
            self.file.truncate()
            self.file.write(data)
            self.file.flush()
        except OSError as exc:
            raise GradCamError(f"output '{self.out}': {exc.strerror or exc}") from None

    def replace(self, force: bool, keep_mode: int | None) -> None:
        """Move the written file to ``out``, checking again what is there now; mode 0644 for a new
        file, the replaced file's permission bits otherwise."""
        assert self.file is not None and self.path is not None
        check_output(self.out, force)
        try:
            self.file.close()
            os.chmod(self.path, 0o644 if keep_mode is None else keep_mode)
            os.replace(self.path, self.out)
        except OSError as exc:
            raise GradCamError(f"output '{self.out}': {exc.strerror or exc}") from None
        self.path = None

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give N (square) or HxW, e.g. 224 or 227x227")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGHUP) raised like KeyboardInterrupt, so that the temporary file is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: returns the exit code (0; 2 after one line on stderr; 130 for Ctrl-C, 143
    for SIGTERM, 129 for SIGHUP, after one line, the temporary file removed)."""
    parser = _Parser(
        prog=Path(sys.argv[0]).name if argv is None and not sys.argv[0].endswith("convert.py") else
        "python -m gradcam_core.convert",
        description="Write a Caffe net (deploy prototxt + caffemodel) as an ONNX file, with the "
                    "preprocessing, the input size and the class names in its metadata.",
    )
    parser.add_argument("proto_file", help="the deploy .prototxt")
    parser.add_argument("model_file", help="the .caffemodel with the weights")
    parser.add_argument("out_file", help="the .onnx file to write (an existing file only with --force)")
    parser.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                        help="the size to trace at and to explain at (N for square); default the prototxt's "
                             "to trace, and 224x224 to explain for a net that takes any size")
    parser.add_argument("--opset", type=_opset, default=OPSET,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {OPSET})")
    parser.add_argument("--mean-value", default="", metavar="B,G,R",
                        help="per-channel means in the net's channel order (as classification.py -mean_value); "
                             "default Caffe's ImageNet means")
    parser.add_argument("--input-scale", default="", help="Caffe's transform_param.scale, after the mean")
    parser.add_argument("--channel-order", default="", choices=["bgr", "rgb"],
                        help="the net's channel order (default bgr)")
    parser.add_argument("--synset-file", default=None, metavar="FILE",
                        help="the class names to write (default synset_words.txt beside the caffemodel)")
    parser.add_argument("-f", "--force", action="store_true",
                        help="replace an existing regular file at out_file, keeping its permission bits")
    handlers = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, _raise_interrupted)
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, or a usage error already printed as one line
            return int(done.code or 0)
        warnings.simplefilter("ignore")  # library warnings would break the one-line promise
        from .cli.options import as_input_options
        from .tasks.classify import preprocessing_for

        options = as_input_options("", args.mean_value, "", args.input_scale, args.channel_order)
        out = caffe_to_onnx(args.proto_file, args.model_file, args.out_file, input_size=args.input_size,
                            opset=args.opset, preprocessing=preprocessing_for("caffe", options),
                            synset_file=args.synset_file, force=args.force)
    except GradCamError as err:
        return _fail(parser.prog, str(err).replace("\n", " ").replace("-mean_value", "--mean-value")
                     .replace("-input_scale", "--input-scale"), 2)
    except KeyboardInterrupt:
        return _fail(parser.prog, "interrupted", 130)
    except MemoryError:
        return _fail(parser.prog, "out of memory", 2)
    except Exception as err:  # noqa: BLE001 - a bug: still one line
        if isinstance(err, RuntimeError) and "can't allocate memory" in str(err):
            return _fail(parser.prog, "out of memory", 2)
        return _fail(parser.prog, f"internal error: {type(err).__name__}: {_first_line(err)}", 1)
    except Interrupted as sig:
        return _fail(parser.prog, f"interrupted ({signal.Signals(sig.signum).name})", 128 + sig.signum)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    print(f"wrote {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are the one line ``prog: error: ...`` (no usage), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _opset(text: str) -> int:
    try:
        opset = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number from {MIN_OPSET} to {MAX_OPSET}") from None
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise argparse.ArgumentTypeError(f"{opset}: only opsets {MIN_OPSET} to {MAX_OPSET} are written")
    return opset


if __name__ == "__main__":
    sys.exit(main())
