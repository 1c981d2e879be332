"""An independent Caffe forward pass for the tests, written in numpy (float64) from Caffe's own formulas.

It shares nothing with ``gradcam_core``'s layer builders: only the parsed net description
(:class:`gradcam_core.formats.caffe.schema.NetSpec`, whose ``params`` are the prototxt's fields) comes
from the package. Each layer below follows the arithmetic of the BVLC Caffe layer of the same name
(``src/caffe/layers/<name>_layer.cpp``), including the rules a port gets wrong:

* pooling: output size ceil((H + 2p - k) / s) + 1 (floor with ``round_mode: FLOOR`` or a fork's
  ``ceil_mode: false``), minus one when padded and the last window would start in the padding; MAX over
  the window clipped to the image; AVE divides by the window clipped to the *padded* image, so padded
  cells count, the ceil overhang does not;
* BatchNorm: the stored mean and variance are divided by the third blob's scale factor, and a factor of 0
  means 0 (not a division by zero);
* LRN: alpha / size once, ACROSS_CHANNELS over a zero-padded channel window, WITHIN_CHANNEL as
  1 + alpha * mean over a zero-padded size x size window.

``materialize(net, x, rng)`` draws random parameter blobs of the shapes Caffe requires and runs the net;
``forward(net, blobs, x)`` runs it with given blobs. Blobs map a layer name to its list of arrays; the
result maps every blob (top) name to its value (N, ...).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradcam_core.formats.caffe.schema import ELTWISE_OP, NORM_REGION, POOL_METHOD, ROUND_MODE, LayerSpec, NetSpec

Blobs = dict[str, list[np.ndarray]]
Param = Callable[[tuple[int, ...]], np.ndarray]  # draws one parameter blob of a shape


def forward(net: NetSpec, blobs: Blobs, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every top of ``net`` for input ``x`` (N, C, H, W), with the layers' parameter ``blobs``."""
    return _run(net, x, lambda spec, shapes: blobs.get(spec.name, []))


def materialize(net: NetSpec, x: np.ndarray, rng: np.random.Generator) -> tuple[Blobs, dict[str, np.ndarray]]:
    """Random parameter blobs for ``net`` (shapes as Caffe requires them) and the forward with them.

    Weights are drawn with a He-like scale so that activations stay of order one through deep nets;
    BatchNorm variances are positive and its scale factor is drawn from {1, 0.5, 999}, the stored
    statistics multiplied by it (a factor 0, meaning statistics 0, is left to a dedicated test).
    """
    made: Blobs = {}

    def draw(spec: LayerSpec, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        arrays = _random_blobs(spec, shapes, rng)
        made[spec.name] = arrays
        return arrays

    return made, _run(net, x, draw)


# --------------------------------------------------------------------------------------------- driver


def _run(net: NetSpec, x: np.ndarray, blobs_for: Callable[[LayerSpec, list[tuple[int, ...]]], list[np.ndarray]]
         ) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    first_input = True
    for spec in net.layers:
        if not spec.bottoms:  # input declarations: the first one is the image
            for top in spec.tops:
                if first_input:
                    values[top] = np.asarray(x, dtype=np.float64)
                    first_input = False
            continue
        bottoms = [values[b] for b in spec.bottoms]
        layer = LAYERS[spec.type]
        shapes = [b.shape for b in bottoms]
        tops = layer(spec, bottoms, blobs_for(spec, shapes))
        for top, value in zip(spec.tops, tops):
            values[top] = value
    return values


def _random_blobs(spec: LayerSpec, shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    shape_of = BLOB_SHAPES.get(spec.type)
    if shape_of is None:
        return []
    out = []
    for i, s in enumerate(shape_of(spec, shapes)):
        fan_in = math.prod(s[1:]) if len(s) > 1 else 1
        if spec.type == "BatchNorm":
            # Stored as Caffe keeps them: the statistics times the scale factor (so that a loader that
            # forgets to divide is off by that factor). A factor of 0 (statistics 0, y = x / sqrt(eps))
            # has its own test: drawn here it multiplies a deep net's activations by 316 per layer, past
            # float32's range in ResNet-50.
            if i == 0:
                factor = rng.choice([1.0, 0.5, 999.0])
            value = [rng.normal(0, 0.5, s) * factor, rng.uniform(0.5, 2.0, s) * factor, np.array([factor])][i]
        elif spec.type == "Scale" and i == 0:
            value = rng.uniform(0.5, 1.5, s)
        elif spec.type == "PReLU":
            value = rng.uniform(0.0, 0.5, s)
        elif i == 0:
            value = rng.normal(0, math.sqrt(2.0 / max(fan_in, 1)), s)
        else:
            value = rng.normal(0, 0.1, s)
        out.append(value.astype(np.float32).astype(np.float64))  # what a float32 caffemodel holds
    return out


# ---------------------------------------------------------------------------------------- geometry


def _pair(p, repeated: str, default: int | None, hw: str) -> tuple[int, int]:
    """(h, w) of a convolution geometry field: ``{hw}_h``/``{hw}_w``, else the repeated field given once
    or twice, else ``default`` (base_conv_layer.cpp)."""
    if p.has(f"{hw}_h") or p.has(f"{hw}_w"):
        return p.get(f"{hw}_h"), p.get(f"{hw}_w")
    values = p.all(repeated)
    return (values[0], values[-1]) if values else (default, default)


def _conv_geometry(spec: LayerSpec):
    p = spec.param("convolution_param")
    kernel = _pair(p, "kernel_size", None, "kernel")
    stride = _pair(p, "stride", 1, "stride")
    pad = _pair(p, "pad", 0, "pad")
    dil = p.all("dilation")
    dilation = (dil[0], dil[-1]) if dil else (1, 1)
    return p, kernel, stride, pad, dilation


def _pad(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


# ------------------------------------------------------------------------------------------ layers


def _convolution(spec, bottoms, blobs):
    p, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv_geometry(spec)
    x = _pad(bottoms[0], ph, pw)
    w = blobs[0].reshape(p.get("num_output"), -1, kh, kw)
    group = p.get("group")
    n, c = x.shape[:2]
    out_h = (x.shape[2] - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (x.shape[3] - (dw * (kw - 1) + 1)) // sw + 1
    windows = sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, : out_h * sh : sh, : out_w * sw : sw, ::dh, ::dw]  # (N, C, oh, ow, kh, kw)
    cg, og = c // group, w.shape[0] // group
    parts = [np.einsum("nchwij,ocij->nohw", windows[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og])
             for g in range(group)]
    y = np.concatenate(parts, axis=1)
    if p.get("bias_term"):
        y = y + blobs[1].reshape(1, -1, 1, 1)
    return [y]


def _deconvolution(spec, bottoms, blobs):
    # Caffe's Deconvolution is the backward of a Convolution: every input value scatters its kernel.
    p, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv_geometry(spec)
    x = bottoms[0]
    group = p.get("group")
    n, c, h, wd = x.shape
    c_out = p.get("num_output")
    w = blobs[0].reshape(c, c_out // group, kh, kw)
    full_h = sh * (h - 1) + dh * (kh - 1) + 1
    full_w = sw * (wd - 1) + dw * (kw - 1) + 1
    y = np.zeros((n, c_out, full_h, full_w))
    cg, og = c // group, c_out // group
    for g in range(group):
        xs, ws = x[:, g * cg : (g + 1) * cg], w[g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xs, ws[:, :, i, j])
                y[:, g * og : (g + 1) * og, i * dh : i * dh + sh * (h - 1) + 1 : sh,
                  j * dw : j * dw + sw * (wd - 1) + 1 : sw] += contrib
    y = y[:, :, ph : full_h - ph, pw : full_w - pw]
    if p.get("bias_term"):
        y = y + blobs[1].reshape(1, -1, 1, 1)
    return [y]


def _pooled(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    out = (math.ceil((size + 2 * p - k) / s) if ceil else math.floor((size + 2 * p - k) / s)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pooling(spec, bottoms, blobs):
    p = spec.param("pooling_param")
    x = bottoms[0]
    n, c, h, w = x.shape
    if p.get("global_pooling"):
        kh, kw = h, w
    elif p.has("kernel_size"):
        kh = kw = p.get("kernel_size")
    else:
        kh, kw = p.get("kernel_h"), p.get("kernel_w")
    sh, sw = (p.get("stride_h"), p.get("stride_w")) if p.has("stride_h") else (p.get("stride"),) * 2
    ph, pw = (p.get("pad_h"), p.get("pad_w")) if p.has("pad_h") else (p.get("pad"),) * 2
    ceil = p.get("round_mode") == ROUND_MODE["CEIL"] and p.get("ceil_mode")
    oh, ow = _pooled(h, kh, sh, ph, ceil), _pooled(w, kw, sw, pw, ceil)
    y = np.empty((n, c, oh, ow))
    is_max = p.get("pool") == POOL_METHOD["MAX"]
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            area = (h1 - h0) * (w1 - w0)  # AVE's divisor: the window clipped to the padded image
            window = x[:, :, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w)]
            y[:, :, i, j] = window.max(axis=(2, 3)) if is_max else window.sum(axis=(2, 3)) / area
    return [y]


def _lrn(spec, bottoms, blobs):
    p = spec.param("lrn_param")
    x = bottoms[0]
    size, alpha, beta, k = p.get("local_size"), p.get("alpha"), p.get("beta"), p.get("k")
    half = (size - 1) // 2
    sq = x * x
    if p.get("norm_region") == NORM_REGION["ACROSS_CHANNELS"]:
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        total = sum(padded[:, i : i + x.shape[1]] for i in range(size))
        scale = k + alpha / size * total
    else:
        padded = _pad(sq, half, half)
        total = sliding_window_view(padded, (size, size), axis=(2, 3)).sum(axis=(-2, -1))
        scale = 1 + alpha * total / (size * size)
    return [x * scale ** -beta]


def _inner_product(spec, bottoms, blobs):
    p = spec.param("inner_product_param")
    x = bottoms[0]
    axis = p.get("axis") % x.ndim
    flat = x.reshape(*x.shape[:axis], -1)
    w = blobs[0].reshape(-1, flat.shape[-1]) if not p.get("transpose") else blobs[0].reshape(flat.shape[-1], -1).T
    y = flat @ w.T
    if p.get("bias_term"):
        y = y + blobs[1].reshape(-1)
    return [y]


def _relu(spec, bottoms, blobs):
    x = bottoms[0]
    slope = spec.param("relu_param").get("negative_slope")
    return [np.maximum(x, 0) + slope * np.minimum(x, 0)]


def _prelu(spec, bottoms, blobs):
    x = bottoms[0]
    a = blobs[0].reshape(-1)
    a = a[0] if spec.param("prelu_param").get("channel_shared") else a.reshape(1, -1, *([1] * (x.ndim - 2)))
    return [np.maximum(x, 0) + a * np.minimum(x, 0)]


def _elu(spec, bottoms, blobs):
    x = bottoms[0]
    alpha = spec.param("elu_param").get("alpha")
    return [np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1))]


def _power(spec, bottoms, blobs):
    p = spec.param("power_param")
    return [(p.get("shift") + p.get("scale") * bottoms[0]) ** p.get("power")]


def _bnll(spec, bottoms, blobs):
    x = bottoms[0]
    return [np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))]


def _softmax(spec, bottoms, blobs):
    x = bottoms[0]
    axis = spec.param("softmax_param").get("axis") % x.ndim
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


def _concat(spec, bottoms, blobs):
    p = spec.param("concat_param")
    axis = p.get("axis") if p.has("axis") or not p.has("concat_dim") else p.get("concat_dim")
    return [np.concatenate(bottoms, axis=axis % bottoms[0].ndim)]


def _eltwise(spec, bottoms, blobs):
    p = spec.param("eltwise_param")
    op = p.get("operation")
    if op == ELTWISE_OP["SUM"]:
        coeff = p.all("coeff") or [1.0] * len(bottoms)
        return [sum(c * b for c, b in zip(coeff, bottoms))]
    if op == ELTWISE_OP["PROD"]:
        return [math.prod(bottoms[1:], start=bottoms[0])]
    return [np.maximum.reduce(bottoms)]


def _batch_norm(spec, bottoms, blobs):
    x = bottoms[0]
    factor = 0.0 if blobs[2].reshape(-1)[0] == 0 else 1.0 / blobs[2].reshape(-1)[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = (blobs[0] * factor).reshape(shape), (blobs[1] * factor).reshape(shape)
    eps = spec.param("batch_norm_param").get("eps")
    return [(x - mean) / np.sqrt(var + eps)]


def _scale_shape(x: np.ndarray, axis: int, num_axes: int) -> tuple[int, ...]:
    axis %= x.ndim
    end = x.ndim if num_axes == -1 else axis + num_axes
    return x.shape[axis:end]


def _broadcast(v: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    axis %= x.ndim
    return v.reshape((1,) * axis + v.shape + (1,) * (x.ndim - axis - v.ndim))


def _scale(spec, bottoms, blobs):
    p = spec.param("scale_param")
    x = bottoms[0]
    axis = p.get("axis")
    if len(bottoms) > 1:
        gamma, rest = bottoms[1], blobs
    else:
        gamma, rest = blobs[0].reshape(_scale_shape(x, axis, p.get("num_axes"))), blobs[1:]
    y = x * _broadcast(gamma, x, axis)
    if p.get("bias_term"):
        y = y + _broadcast(rest[0].reshape(gamma.shape), x, axis)
    return [y]


def _bias(spec, bottoms, blobs):
    p = spec.param("bias_param")
    x = bottoms[0]
    beta = bottoms[1] if len(bottoms) > 1 else blobs[0].reshape(_scale_shape(x, p.get("axis"), p.get("num_axes")))
    return [x + _broadcast(beta, x, p.get("axis"))]


def _slice(spec, bottoms, blobs):
    p = spec.param("slice_param")
    x = bottoms[0]
    axis = (p.get("axis") if p.has("axis") or not p.has("slice_dim") else p.get("slice_dim")) % x.ndim
    points = p.all("slice_point")
    if not points:
        step = x.shape[axis] // len(spec.tops)
        points = [step * i for i in range(1, len(spec.tops))]
    return list(np.split(x, points, axis=axis))


def _flatten(spec, bottoms, blobs):
    p = spec.param("flatten_param")
    x = bottoms[0]
    start, end = p.get("axis") % x.ndim, p.get("end_axis") % x.ndim
    return [x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])]


def _reshape(spec, bottoms, blobs):
    p = spec.param("reshape_param")
    x = bottoms[0]
    dims = list(p.get("shape").all("dim"))
    axis = p.get("axis") % (x.ndim + 1)
    num_axes = p.get("num_axes")
    end = x.ndim if num_axes == -1 else axis + num_axes
    dims = [x.shape[axis + i] if d == 0 else d for i, d in enumerate(dims)]
    new = [*x.shape[:axis], *dims, *x.shape[end:]]
    if -1 in new:
        known = math.prod(d for d in new if d != -1)
        new[new.index(-1)] = x.size // known
    return [x.reshape(new)]


def _crop(spec, bottoms, blobs):
    p = spec.param("crop_param")
    x, ref = bottoms
    axis = p.get("axis") % x.ndim
    offsets = p.all("offset")
    index = [slice(None)] * x.ndim
    for i, a in enumerate(range(axis, x.ndim)):
        off = 0 if not offsets else (offsets[0] if len(offsets) == 1 else offsets[i])
        index[a] = slice(off, off + ref.shape[a])
    return [x[tuple(index)]]


def _identity(spec, bottoms, blobs):
    return [bottoms[0]]


def _split(spec, bottoms, blobs):
    return [bottoms[0]] * len(spec.tops)


LAYERS: dict[str, Callable] = {
    "Convolution": _convolution, "Deconvolution": _deconvolution, "Pooling": _pooling, "LRN": _lrn,
    "InnerProduct": _inner_product, "ReLU": _relu, "PReLU": _prelu, "ELU": _elu, "Power": _power,
    "BNLL": _bnll, "AbsVal": lambda s, b, w: [np.abs(b[0])], "Sigmoid": lambda s, b, w: [1 / (1 + np.exp(-b[0]))],
    "TanH": lambda s, b, w: [np.tanh(b[0])], "Softmax": _softmax, "Dropout": _identity, "Concat": _concat,
    "Eltwise": _eltwise, "BatchNorm": _batch_norm, "Scale": _scale, "Bias": _bias, "Slice": _slice,
    "Flatten": _flatten, "Reshape": _reshape, "Crop": _crop, "Split": _split,
}


def _conv_blob_shapes(spec, shapes):
    p, (kh, kw), *_ = _conv_geometry(spec)
    n_out, group, c_in = p.get("num_output"), p.get("group"), shapes[0][1]
    weight = (c_in, n_out // group, kh, kw) if spec.type == "Deconvolution" else (n_out, c_in // group, kh, kw)
    return [weight] + ([(n_out,)] if p.get("bias_term") else [])


def _ip_blob_shapes(spec, shapes):
    p = spec.param("inner_product_param")
    axis = p.get("axis") % len(shapes[0])
    fan_in = math.prod(shapes[0][axis:])
    n_out = p.get("num_output")
    weight = (fan_in, n_out) if p.get("transpose") else (n_out, fan_in)
    return [weight] + ([(n_out,)] if p.get("bias_term") else [])


def _scale_blob_shapes(spec, shapes):
    p = spec.param("scale_param")
    if len(shapes) > 1:
        return [tuple(shapes[1])] if p.get("bias_term") else []
    num_axes = p.get("num_axes")
    axis = p.get("axis") % len(shapes[0])
    s = tuple(shapes[0][axis:] if num_axes == -1 else shapes[0][axis : axis + num_axes])
    return [s, s] if p.get("bias_term") else [s]


BLOB_SHAPES: dict[str, Callable] = {
    "Convolution": _conv_blob_shapes,
    "Deconvolution": _conv_blob_shapes,
    "InnerProduct": _ip_blob_shapes,
    "BatchNorm": lambda spec, shapes: [(shapes[0][1],), (shapes[0][1],), (1,)],
    "Scale": _scale_blob_shapes,
    "Bias": lambda spec, shapes: [] if len(shapes) > 1 else [tuple(shapes[0][1:2])],
    "PReLU": lambda spec, shapes: [(1,) if spec.param("prelu_param").get("channel_shared") else (shapes[0][1],)],
}
