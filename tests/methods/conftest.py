"""What the CAM method tests share: small random-weight nets and pytorch-grad-cam as the oracle.

The nets (:data:`CASES`): four torchvision architectures built by their constructors with
``weights=None`` (seeded; no download) and a Caffe chain written here by ``tests/caffe_writer.py``,
each with two images, a layer and three target classes. The torchvision nets' BatchNorm statistics
are estimated on random images (an untrained MobileNetV3's otherwise shrink its activations to 1e-9,
where every method's map is rounding noise), and VGG-11's classifier is narrowed to 64 units (its
4096-wide one is 120 M parameters that the maps at ``features.19`` do not need).

The oracle: pytorch-grad-cam (``grad-cam``, pinned in the ``test`` extra) on the same model, layer,
images and targets, its per-layer map taken before its resize and min-max normalisation, two ways:

* :func:`pgc_map`: its whole ``__call__`` (its own hooks, targets, backward, ``aug_smooth``) with its
  scaling step ``base_cam.scale_cam_image`` replaced by the identity: ``ReLU(get_cam_image(...))`` at
  the layer's resolution;
* :func:`pgc_projection`: its ``get_cam_image`` on the activations and gradients its own
  ``ActivationsAndGradients`` captured, before the ReLU, for the maps that are principal components:
  their sign is LAPACK's arbitrary one there, so it is oriented first by the rule ours documents
  (positive covariance with the channel sum of the projected terms), written here from pgc's values.

pytorch-grad-cam takes one target per image: the K targets are explained at once on the images
repeated K times.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_core.engine import resolve_layer

#: our method name -> pytorch-grad-cam's class
PGC_CLASSES = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
}
#: the methods that are principal components (their sign must be oriented before comparing)
PROJECTIONS = ("eigencam", "eigengradcam")
TOLERANCE = 1e-4
"""Of each map's maximum (the issue's bound)."""


@dataclass(frozen=True)
class Case:
    """A model, its layer, N images (N, 3, S, S) and K target classes; ``reshape`` is pytorch-grad-cam's
    ``reshape_transform`` for a layer that is not NCHW (tests/methods/test_layouts.py)."""

    name: str
    model: nn.Module
    layer: str
    images: torch.Tensor
    classes: tuple[int, ...]
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def module(self) -> nn.Module:
        """The module pytorch-grad-cam hooks: the one whose output is the layer's activations."""
        grad_module, value_module = resolve_layer(self.model, self.layer)
        assert grad_module is value_module, "the oracle reads the module's own output"
        return value_module


def _calibrated(model: nn.Module, size: int) -> nn.Module:
    """BatchNorm statistics estimated on 16 random images (cumulative averages), then eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(5)))
    return model.eval()


def _torchvision(name: str, layer: str, size: int, classes: tuple[int, ...]) -> Case:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    if name.startswith("vgg"):
        model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(inplace=True), nn.Linear(64, 1000))
    model = _calibrated(model, size)
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return Case(name, model, layer, images, classes)


def _caffe(folder: Path) -> Case:
    """conv-ReLU(in place)-pool, conv-ReLU (its own top: the explained layer), conv-ReLU(in place)-pool,
    InnerProduct: a loadcaffe-style chain with He-normal float32 weights."""
    import caffe_writer as write

    from gradcam_core.caffe import load_caffe

    rng = np.random.default_rng(3)

    def conv(name: str, bottom: str, c_in: int, c_out: int) -> dict:
        w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32) * np.float32(np.sqrt(2 / (9 * c_in)))
        return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
                "convolution_param": {"num_output": c_out, "kernel_size": 3, "pad": 1},
                "blobs": [w, rng.uniform(-0.1, 0.1, c_out).astype(np.float32)]}

    def layer(name: str, type_: str, bottom: str, top: str, **params: dict) -> dict:
        return {"name": name, "type": type_, "bottom": [bottom], "top": [top], **params}

    pool = {"pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}}
    ip_w = rng.standard_normal((10, 16 * 8 * 8)).astype(np.float32) * np.float32(np.sqrt(2 / 1024))
    layers = [
        conv("conv1", "data", 3, 8), layer("relu1", "ReLU", "conv1", "conv1"),
        layer("pool1", "Pooling", "conv1", "pool1", **pool),
        conv("conv2", "pool1", 8, 16), layer("relu2", "ReLU", "conv2", "relu2"),
        conv("conv3", "relu2", 16, 16), layer("relu3", "ReLU", "conv3", "conv3"),
        layer("pool3", "Pooling", "conv3", "pool3", **pool),
        {"name": "ip", "type": "InnerProduct", "bottom": ["pool3"], "top": ["ip"],
         "inner_product_param": {"num_output": 10}, "blobs": [ip_w, np.zeros(10, np.float32)]},
    ]
    proto = write.write_prototxt(folder / "net.prototxt", layers, input_shape=(1, 3, 32, 32))
    net = load_caffe(proto, write.write_caffemodel(folder / "net.caffemodel", layers))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 50
    return Case("caffe", net, "relu2", images, (1, 4, 7))


CASES: dict[str, Callable[[Path], Case]] = {
    "resnet18": lambda _: _torchvision("resnet18", "layer3", 96, (0, 882, 500)),
    "vgg11": lambda _: _torchvision("vgg11", "features.19", 96, (3, 1, 999)),
    "mobilenet_v3_small": lambda _: _torchvision("mobilenet_v3_small", "features.8", 96, (42, 650, 7)),
    "densenet121": lambda _: _torchvision("densenet121", "features.denseblock3", 64, (865, 60, 2)),
    "caffe": _caffe,
}


@cache
def _built(name: str, folder: Path) -> Case:
    return CASES[name](folder)


@pytest.fixture(scope="session")
def net_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nets")


@pytest.fixture(scope="session", params=list(CASES))
def case(request: pytest.FixtureRequest, net_folder: Path) -> Case:
    """Each net of :data:`CASES` (built once per session)."""
    return _built(request.param, net_folder)


@pytest.fixture(scope="session")
def build(net_folder: Path) -> Callable[[str], Case]:
    """The net of :data:`CASES` named (built once per session)."""
    return lambda name: _built(name, net_folder)


@pytest.fixture(scope="session")
def resnet(net_folder: Path) -> Case:
    return _built("resnet18", net_folder)


@pytest.fixture(scope="session")
def caffe_case(net_folder: Path) -> Case:
    return _built("caffe", net_folder)


# ------------------------------------------------------------------------------------------ oracle


def _pgc(method: str) -> type:
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, PGC_CLASSES[method])


def _stacked(case: Case) -> tuple[torch.Tensor, list]:
    """The images repeated K times (target k's copy k-th) and one pytorch-grad-cam target per image."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    n = case.images.shape[0]
    x = case.images.repeat(len(case.classes), 1, 1, 1).requires_grad_()  # parameters are frozen
    return x, [ClassifierOutputTarget(c) for c in case.classes for _ in range(n)]


def _per_target(maps: np.ndarray, case: Case) -> np.ndarray:
    """(K * N, h, w) -> (N, K, h, w)."""
    k, n = len(case.classes), case.images.shape[0]
    return maps.reshape(k, n, *maps.shape[1:]).transpose(1, 0, 2, 3)


def pgc_map(case: Case, method: str, *, aug_smooth: bool = False, eigen_smooth: bool = False) -> np.ndarray:
    """pytorch-grad-cam's map (N, K, h, w): its ``__call__`` with the resize and min-max step removed."""
    from pytorch_grad_cam import base_cam

    x, targets = _stacked(case)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
        with _pgc(method)(case.model, [case.module], reshape_transform=case.reshape) as cam:
            maps = cam(x, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    return _per_target(maps, case)


Reference = Callable[[object, np.ndarray, np.ndarray], np.ndarray]


def pgc_projection(case: Case, method: str, *, eigen_smooth: bool, orient_by: Reference | None = None) -> np.ndarray:
    """pytorch-grad-cam's principal-component map (N, K, h, w), oriented then rectified.

    ``get_cam_image`` runs on what its ``ActivationsAndGradients`` captured. The sign is chosen so that
    the map's covariance over positions with ``orient_by(cam, activations, gradients)`` (the channel
    sum of the projected terms, (K * N, h, w)) is positive; by default the method's own map without
    ``eigen_smooth``, which is that sum.
    """
    x, targets = _stacked(case)
    with _pgc(method)(case.model, [case.module], reshape_transform=case.reshape) as cam:
        outputs = cam.activations_and_grads(x)
        sum(t(o) for t, o in zip(targets, outputs)).backward()
        a = cam.activations_and_grads.activations[0].numpy()
        g = cam.activations_and_grads.gradients[0].numpy()
        p = cam.get_cam_image(x, case.module, targets, a, g, eigen_smooth)
        s = (orient_by or (lambda c, a, g: c.get_cam_image(x, case.module, targets, a, g, False)))(cam, a, g)
    p, s = p.astype(np.float64), s.astype(np.float64)
    cov = ((p - p.mean((1, 2), keepdims=True)) * (s - s.mean((1, 2), keepdims=True))).sum((1, 2))
    return _per_target(np.maximum(np.where(cov[:, None, None] < 0, -p, p), 0), case)


def assert_maps_close(ours: torch.Tensor, reference: np.ndarray, *, factor: float = 1.0, what: str = "") -> None:
    """``ours`` (N, K, h, w) == ``factor * reference`` within :data:`TOLERANCE` of each map's maximum
    (a reference map that is all zero: of the largest map's maximum); at most a third of the maps may
    be all zero (a comparison of nothing)."""
    ref = factor * reference.astype(np.float64)
    got = ours.detach().double().numpy()
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    peak = np.abs(ref).max(axis=(2, 3))
    assert (peak > 0).mean() >= 2 / 3, f"{what}: {int((peak == 0).sum())} reference maps are all zero"
    peak = np.where(peak > 0, peak, peak.max())
    err = np.abs(got - ref).max(axis=(2, 3))
    worst = np.unravel_index(np.argmax(err / peak), err.shape)
    assert (err <= TOLERANCE * peak).all(), f"{what}: map {worst} off by {err[worst] / peak[worst]:.2e} of its maximum"
