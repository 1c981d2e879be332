"""What the perturbation and FullGrad tests share: small seeded networks (torchvision architectures, a
Caffe net written by caffe_writer), pytorch-grad-cam's per-layer map, the model-unchanged check."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import caffe_writer as write
import numpy as np
import torch
from torch import nn

from gradcam_core.caffe import load_caffe

ARCHS = ("resnet18", "vgg11", "mobilenet_v3_small")


def torchvision_net(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """``name`` with seeded random weights (no download), 10 classes, in eval mode. Convolution biases
    and batch norms' affine parameters and statistics are drawn too (torchvision starts them at 0 / 1,
    which would leave FullGrad's bias terms empty)."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.to(dtype)


def caffe_layers(seed: int = 0) -> list[dict]:
    """A small Caffe net: conv1 relu1 (in place) pool1 conv2 relu2 (in place) conv3 relu3 fc (10)."""
    rng = np.random.default_rng(seed)

    def conv(name: str, bottom: str, c_in: int, c_out: int) -> dict:
        w = rng.normal(0, np.sqrt(2 / (9 * c_in)), (c_out, c_in, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, c_out).astype(np.float32)
        return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
                "convolution_param": {"num_output": c_out, "kernel_size": 3, "pad": 1}, "blobs": [w, b]}

    def relu(name: str, blob: str) -> dict:
        return {"name": name, "type": "ReLU", "bottom": [blob], "top": [blob]}

    fc_w = rng.normal(0, 0.05, (10, 12 * 8 * 8)).astype(np.float32)
    return [conv("conv1", "data", 3, 8), relu("relu1", "conv1"),
            {"name": "pool1", "type": "Pooling", "bottom": ["conv1"], "top": ["pool1"],
             "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
            conv("conv2", "pool1", 8, 16), relu("relu2", "conv2"),
            conv("conv3", "conv2", 16, 12), relu("relu3", "conv3"),
            {"name": "fc", "type": "InnerProduct", "bottom": ["conv3"], "top": ["fc"],
             "inner_product_param": {"num_output": 10}, "blobs": [fc_w, rng.normal(0, 0.1, 10).astype(np.float32)]}]


def caffe_net(folder: Path, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The :func:`caffe_layers` net written as prototxt + caffemodel and loaded back (16 x 16 inputs)."""
    layers = caffe_layers()
    proto = write.write_prototxt(folder / "net.prototxt", layers, input_shape=(1, 3, 16, 16))
    model = write.write_caffemodel(folder / "net.caffemodel", layers)
    return load_caffe(proto, model, dtype=dtype)


def images(n: int = 2, size: int = 32, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(dtype)


@contextlib.contextmanager
def layer_map(module: object, name: str = "scale_cam_image") -> Iterator[dict[str, torch.Tensor]]:
    """pytorch-grad-cam's map before its resize and min-max: the first array its module ``module``
    hands to ``scale_cam_image`` during the block, as {"map": (N, h, w) tensor}."""
    original = getattr(module, name)
    got: dict[str, torch.Tensor] = {}

    def record(cam, *args, **kwargs):
        got.setdefault("map", torch.from_numpy(np.asarray(cam, dtype=np.float64)))
        return original(cam, *args, **kwargs)

    setattr(module, name, record)
    try:
        yield got
    finally:
        setattr(module, name, original)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|."""
    ours, ref = ours.double(), ref.double()
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return ({k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()])


def assert_unchanged(model: nn.Module, before: tuple[dict[str, torch.Tensor], list[bool]]) -> None:
    """Same state_dict (bit for bit), same requires_grad flags, no hook left on any module."""
    state, flags = before
    after = model.state_dict()
    assert state.keys() == after.keys()
    for k, v in state.items():
        assert torch.equal(v, after[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, name
        assert "forward" not in vars(m), name


def count_forwards(model: nn.Module) -> tuple[list[int], object]:
    """A forward pre-hook recording the batch size of every call of ``model``; (sizes, handle)."""
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    return sizes, handle
