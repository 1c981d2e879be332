"""Layer layouts (gradcam_core/engine/layouts.py): NCHW, NHWC (Swin) and token (ViT) layers recognised,
every CAM method of the registry equal to pytorch-grad-cam with the matching ``reshape_transform``,
Ablation-CAM writing its ablated channels back in the layer's layout, non-grid shapes refused, the
override, the transformers' default layers, guided backprop through a ViT.

The quick tests use tiny configurations of torchvision's own classes (VisionTransformer,
SwinTransformer, MaxVit); the full-size vit_b_16, swin_t and maxvit_t (random weights) are slow.
"""
from __future__ import annotations

from collections.abc import Callable

import cli_runner
import numpy as np
import pytest
import torch
import torchvision
from conftest import ROOT
from torch import nn

from gradcam_core import explain
from gradcam_core.engine import ClassTarget
from gradcam_core.engine.layers import default_layer, describe_default
from gradcam_core.engine.layouts import Layout, plausible_grid, recognise
from gradcam_core.engine.methods import method_names
from gradcam_core.errors import GradCamError

from .conftest import Case, _calibrated, assert_maps_close, pgc_map, pgc_projection
from .pert_common import layer_map, rel_err

grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import base_cam, fullgrad_cam  # noqa: E402
from pytorch_grad_cam.ablation_layer import AblationLayerVit  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TOL = 1e-4  # of the map's maximum


# ------------------------------------------------------------------------------------------ models


def _randomised_head(model: nn.Module) -> nn.Module:
    """torchvision starts a ViT's head at zero (every score 0, every map blank): draw it."""
    head = getattr(getattr(model, "heads", None), "head", None)
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(7)) * 0.05)
    return model


def _drawn_norms(model: nn.Module) -> nn.Module:
    """LayerNorms' affine parameters drawn: at torchvision's initial 1 and 0 every token's channels sum to
    0, so Eigen-CAM's sign rule (its correlation with the channel sum) would compare rounding noise."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None and m.bias is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model


def _frozen(model: nn.Module) -> nn.Module:
    model = _drawn_norms(_randomised_head(model)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return _frozen(torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                       hidden_dim=32, mlp_dim=64, num_classes=10))


def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return _frozen(torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                                      window_size=[2, 2], num_classes=10))


def tiny_maxvit() -> nn.Module:
    """Its batch norms' statistics estimated on random images (conftest's nets' way): at torchvision's
    initial ones most of its maps are blank after the methods' ReLU."""
    torch.manual_seed(0)
    return _frozen(_calibrated(torchvision.models.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2,
                                                         block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                                                         stochastic_depth_prob=0.0, num_classes=10), 32))


def tokens_to_nchw(extra: int, grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ViT ``reshape_transform``: drop the class token, patches to (N, C, h, w)."""
    return lambda t: t[:, extra:].reshape(t.shape[0], *grid, t.shape[2]).permute(0, 3, 1, 2)


def nhwc_to_nchw(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def _case(name: str, model: nn.Module, layer: str, size: int, n: int, classes: tuple[int, ...],
          reshape: Callable[[torch.Tensor], torch.Tensor] | None) -> Case:
    dtype = next(model.parameters()).dtype
    images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dtype)
    return Case(name, model, layer, images, classes, reshape)


TINY: dict[str, Callable[[], Case]] = {
    "vit": lambda: _case("vit", tiny_vit(), "encoder.layers.encoder_layer_1.ln_1", 32, 2, (1, 4, 7),
                         tokens_to_nchw(1, (4, 4))),
    "swin": lambda: _case("swin", tiny_swin(), "features.3.0.norm2", 32, 2, (1, 4, 7), nhwc_to_nchw),
    "maxvit": lambda: _case("maxvit", tiny_maxvit(), "blocks.1", 32, 2, (1, 4, 7), None),
}
FULL: dict[str, Callable[[], Case]] = {
    "vit_b_16": lambda: _case("vit_b_16", _full("vit_b_16"), "encoder.layers.encoder_layer_11.ln_1", 224, 1,
                              (243,), tokens_to_nchw(1, (14, 14))),
    "swin_t": lambda: _case("swin_t", _full("swin_t"), "features.7.1.norm2", 224, 1, (243,), nhwc_to_nchw),
    "maxvit_t": lambda: _case("maxvit_t", _full("maxvit_t"), "blocks.3", 224, 1, (243,), None),
}
LAYOUT_OF = {"vit": "tokens", "swin": "nhwc", "maxvit": "nchw", "vit_b_16": "tokens", "swin_t": "nhwc",
             "maxvit_t": "nchw"}


def _full(arch: str) -> nn.Module:
    """In float64: XGrad-CAM divides by sum_ij A^c, near 0 for some channels of a full-size net, where
    float32's rounding (ours and pytorch-grad-cam's alike) moves the map by 1-2e-4 of its maximum."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None)
    return _frozen(_calibrated(model, 224) if arch == "maxvit_t" else model).double()


_BUILT: dict[str, Case] = {}


def built(name: str) -> Case:
    if name not in _BUILT:
        _BUILT[name] = {**TINY, **FULL}[name]()
    return _BUILT[name]


# ------------------------------------------------------------------ every method against the oracle

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam")
PERTURBATION = ("scorecam", "ablationcam")  # the quick tiny nets only: a forward per channel of a full-size net


def _channel_sum(_cam, a, _g):
    return a.sum(axis=1)


def _hirescam(_cam, a, _g):
    return (_g * a).sum(axis=1)


def fullgrad_reference(case: Case, cls: int) -> torch.Tensor:
    """pytorch-grad-cam's FullGrad map (N, H, W), before its final min-max (it ignores the layer)."""
    with layer_map(fullgrad_cam) as got, grad_cam.FullGrad(case.model, []) as cam:
        cam(case.images, [ClassifierOutputTarget(cls)] * case.images.shape[0])
    return got["map"]


def check_every_gradient_method(case: Case) -> set[str]:
    """Ours == pytorch-grad-cam (with ``case.reshape``) at the layer's map for the gradient methods,
    Eigen-CAM, Eigen-Grad-CAM and FullGrad; the methods checked."""
    classes = list(case.classes)
    ours = explain(case.model, case.images, case.layer, classes, method=[*GRADIENT_METHODS, "eigencam",
                                                                         "eigengradcam", "fullgrad"], guided=False)
    assert {e.layout for e in ours.values()} == {LAYOUT_OF[case.name]}
    for name in GRADIENT_METHODS:
        cam = ours[name].cam_raw
        factor = cam.shape[-1] * cam.shape[-2] if name == "gradcam" else 1  # ours sums where pgc averages
        assert_maps_close(cam, pgc_map(case, name), factor=factor, what=f"{case.name} {name}")
    assert_maps_close(ours["eigencam"].cam_raw, pgc_projection(case, "eigencam", eigen_smooth=False,
                                                               orient_by=_channel_sum), what=f"{case.name} eigencam")
    assert_maps_close(ours["eigengradcam"].cam_raw, pgc_projection(case, "eigengradcam", eigen_smooth=False,
                                                                   orient_by=_hirescam), what=f"{case.name} eigengradcam")
    assert rel_err(ours["fullgrad"].cam_raw[:, 0], fullgrad_reference(case, classes[0])) < TOL
    return {*GRADIENT_METHODS, "eigencam", "eigengradcam", "fullgrad"}


def scorecam_reference(case: Case, cls: int) -> torch.Tensor:
    with layer_map(base_cam) as got, grad_cam.ScoreCAM(case.model, [case.module], reshape_transform=case.reshape) as cam:
        cam(case.images, [ClassifierOutputTarget(cls)] * case.images.shape[0])
    return got["map"]


def hand_ablation_tokens(case: Case, extra: int, cls: int) -> torch.Tensor:
    """Ablation-CAM on a token layer from its formula, a channel at a time: channel c of the PATCH
    tokens set to v (0 if their minimum is 0, else the minimum - 1e7), the extra tokens as the layer
    gave them; w = (y - y_c) / y; ReLU(sum_c w_c A_c) on the (N, C, h, w) view. -> (N, h, w)."""
    module = case.module
    maps = []
    for image in case.images:
        x = image[None]
        got: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(lambda _m, _i, out, got=got: got.setdefault("out", out.clone()))
        with torch.no_grad():
            y = float(case.model(x)[0, cls])
        handle.remove()
        out = got["out"]
        patches = out[:, extra:]
        lo = float(patches.min())
        value = 0.0 if lo == 0 else lo - 1e7
        weights = []
        for c in range(out.shape[2]):
            ablated = out.clone()
            ablated[:, extra:, c] = value
            handle = module.register_forward_hook(lambda _m, _i, _o, r=ablated: r)
            with torch.no_grad():
                y_c = float(case.model(x)[0, cls])
            handle.remove()
            weights.append((y - y_c) / y)
        a = case.reshape(out)[0]  # type: ignore[misc]
        w = torch.tensor(weights, dtype=a.dtype)
        maps.append(torch.relu((w[:, None, None] * a).sum(dim=0)))
    return torch.stack(maps)


def ablation_reference_nhwc(case: Case, cls: int) -> torch.Tensor:
    """pytorch-grad-cam's AblationCAM on an NHWC layer: its ViT ablation layer ablates a channel at
    every position of the (N, h, w, C) output (one channel per forward: its ablation value then is
    ours, min A - 1e7)."""
    with layer_map(base_cam) as got, grad_cam.AblationCAM(case.model, [case.module], reshape_transform=case.reshape,
                                                          ablation_layer=AblationLayerVit(), batch_size=1) as cam:
        cam(case.images, [ClassifierOutputTarget(cls)] * case.images.shape[0])
    return got["map"]


@pytest.mark.slow  # 5-20 s each; the quick tests below check Grad-CAM, Score-CAM and Ablation-CAM on one image
@pytest.mark.parametrize("name", list(TINY))
def test_every_method_equals_pytorch_grad_cam_on_a_tiny_transformer(name):
    case = built(name)
    checked = check_every_gradient_method(case)
    cls = case.classes[0]
    score = explain(case.model, case.images, case.layer, [cls], method="scorecam", guided=False)
    assert score.layout == LAYOUT_OF[name]
    assert rel_err(score.cam_raw[:, 0], scorecam_reference(case, cls)) < TOL
    ablation = explain(case.model, case.images, case.layer, [cls], method="ablationcam", guided=False)
    if name == "vit":  # pytorch-grad-cam would ablate the class token too: the formula, written here
        ref = hand_ablation_tokens(case, 1, cls)
    elif name == "swin":
        ref = ablation_reference_nhwc(case, cls)
    else:
        with layer_map(base_cam) as got, grad_cam.AblationCAM(case.model, [case.module], batch_size=1) as cam:
            cam(case.images, [ClassifierOutputTarget(cls)] * case.images.shape[0])
        ref = got["map"]
    assert float((ref > 0).double().mean()) > 0.05, "a map to compare"
    assert rel_err(ablation.cam_raw[:, 0], ref) < TOL
    assert checked | set(PERTURBATION) == set(method_names()), "every method of the registry is compared"


def _one_image(case: Case) -> Case:
    return Case(case.name, case.model, case.layer, case.images[:1], case.classes[:2], case.reshape)


@pytest.mark.parametrize("name", ["vit", pytest.param("swin", marks=pytest.mark.slow)])
def test_grad_cam_on_tokens_and_nhwc_equals_pytorch_grad_cam(name):
    case = _one_image(built(name))
    ours = explain(case.model, case.images, case.layer, list(case.classes), guided=False)
    assert ours.layout == LAYOUT_OF[name]
    z = ours.cam_raw.shape[-1] * ours.cam_raw.shape[-2]
    assert_maps_close(ours.cam_raw, pgc_map(case, "gradcam"), factor=z, what=name)


def test_ablation_cam_on_a_token_layer_equals_its_formula():
    """The ablated channels written back as tokens, the class token kept (Score-CAM on tokens against
    pytorch-grad-cam: the slow tiny-transformer test)."""
    case = _one_image(built("vit"))
    ours = explain(case.model, case.images, case.layer, [4], method=["ablationcam"], guided=False)
    ref = hand_ablation_tokens(case, 1, 4)
    assert float((ref > 0).double().mean()) > 0.05
    assert rel_err(ours["ablationcam"].cam_raw[:, 0], ref) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FULL))
def test_every_gradient_method_equals_pytorch_grad_cam_on_a_full_size_transformer(name):
    check_every_gradient_method(built(name))


@pytest.mark.slow  # 2 s; the quick check of the same: test_ablation_cam_on_a_token_layer_equals_its_formula
def test_ablation_keeps_the_class_token_as_the_layer_gave_it():
    """What reaches the layers above: the ablated patch tokens, the class token untouched."""
    case = built("vit")
    module = case.module
    seen: list[torch.Tensor] = []
    above = case.model.encoder.layers.encoder_layer_1.self_attention
    handle = above.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        explain(case.model, case.images[:1], case.layer, [1], method="ablationcam", guided=False, batch_size=8)
    finally:
        handle.remove()
    got: list[torch.Tensor] = []
    h = module.register_forward_hook(lambda _m, _i, out: got.append(out.clone()))
    with torch.no_grad():
        case.model(case.images[:1])
    h.remove()
    cls_token = got[0][:, 0]
    assert len(seen) > 2
    for batch in seen[2:]:  # after explain's forward and the unablated copy's
        assert torch.equal(batch[:, 0], cls_token.expand(batch.shape[0], -1))
        changed = (batch[:, 1:] != got[0][:, 1:]).any(dim=1)  # (B, C): the channel ablated in each copy
        assert (changed.sum(dim=1) == 1).all()


# ------------------------------------------------------------------------------- recognition


@pytest.mark.parametrize(("shape", "size", "expected"), [
    ((1, 197, 768), (224, 224), Layout("tokens", (14, 14), 1)),  # ViT-B/16: class token
    ((1, 198, 768), (224, 224), Layout("tokens", (14, 14), 2)),  # DeiT distilled: class + distillation
    ((1, 49, 768), (224, 224), Layout("tokens", (7, 7), 0)),  # Swin-style tokens, none extra
    ((1, 281, 64), (224, 320), Layout("tokens", (14, 20), 1)),  # a rectangular input
    ((2, 7, 7, 768), (224, 224), Layout("nhwc", (7, 7))),  # torchvision Swin
    ((2, 768, 7, 7), (224, 224), Layout("nchw", (7, 7))),
    ((1, 512, 14, 20), (224, 320), Layout("nchw", (14, 20))),
    ((1, 64, 55, 55), (227, 227), Layout("nchw", (55, 55))),  # AlexNet's valid convolution
    ((1, 8, 8, 8), (32, 32), Layout("nchw", (8, 8))),  # both fit, no module: NCHW
])
def test_a_layout_is_recognised_from_the_shape(shape, size, expected):
    assert recognise(shape, size) == expected


def test_a_tie_is_decided_by_the_layer_module_and_the_patch_size_by_the_model():
    assert recognise((1, 8, 8, 8), (32, 32), module=nn.Conv2d(3, 8, 3)).kind == "nchw"
    assert recognise((1, 8, 8, 8), (32, 32), module=nn.LayerNorm(8)).kind == "nhwc"
    assert recognise((1, 8, 8, 8), (32, 32), module=nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))).kind == "nhwc"
    # 17 tokens at 32 x 32: a class token + 4 x 4 patches (the model's patch size 8 says so too)
    assert recognise((1, 17, 32), (32, 32)) == recognise((1, 17, 32), (32, 32), patch=(8, 8)) == Layout("tokens", (4, 4), 1)
    assert not plausible_grid(7, 768, 224, 224) and plausible_grid(7, 7, 224, 224)


def test_the_tiny_models_layouts_through_explain():
    x = torch.randn(1, 3, 32, 32)
    vit, swin, maxvit = built("vit").model, built("swin").model, built("maxvit").model
    for model, layer, kind, grid in [(vit, "encoder.layers.encoder_layer_1.ln_1", "tokens", (4, 4)),
                                     (vit, "encoder", "tokens", (4, 4)), (vit, "conv_proj", "nchw", (4, 4)),
                                     (swin, "features.3.0.norm2", "nhwc", (4, 4)), (swin, "norm", "nhwc", (4, 4)),
                                     (swin, "features.1", "nhwc", (8, 8)), (maxvit, "blocks.1", "nchw", (4, 4))]:
        e = explain(model, x, layer, [1], guided=False)
        assert (e.layout, tuple(e.cam_raw.shape[-2:]), tuple(e.activations.shape[-2:])) == (kind, grid, grid), layer


def _refusal(model: nn.Module, x: torch.Tensor, layer: str, **kw) -> str:
    with pytest.raises(GradCamError) as err:
        explain(model, x, layer, [1], guided=False, **kw)
    message = str(err.value)
    assert "\n" not in message
    return message


class _Reshaped(nn.Module):
    """A conv net whose middle layer hands on a (N, 1, 49, 96) reshape of its (N, 96, 7, 7) map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 96, 32, stride=32)
        self.windows = nn.Unflatten(1, (1, 49))
        self.head = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.windows(self.conv(x).flatten(2).transpose(1, 2))  # (N, 1, 49, 96)
        return self.head(a.mean(dim=(1, 2)))


def test_a_4d_shape_that_is_no_grid_is_refused_in_one_line():
    message = _refusal(_Reshaped().eval(), torch.randn(1, 3, 224, 224), "windows")
    assert "(1, 1, 49, 96)" in message and "not a spatial map" in message
    # MaxViT's window partitions look like (N, h, w, C) maps at this size: refused as what they are
    message = _refusal(built("maxvit").model, torch.randn(1, 3, 32, 32), "blocks.1.layers.0.layers.grid_attention.attn_layer.0")
    assert "window partition" in message


def test_the_override_reads_the_layer_as_told():
    swin, x = built("swin").model, torch.randn(1, 3, 32, 32)
    auto = explain(swin, x, "features.3.0.norm2", [1], guided=False)
    nhwc = explain(swin, x, "features.3.0.norm2", [1], guided=False, layer_layout="nhwc")
    assert torch.equal(auto.cam_raw, nhwc.cam_raw)
    forced = explain(swin, x, "features.3.0.norm2", [1], guided=False, layer_layout="nchw")  # the user's word
    assert forced.layout == "nchw" and forced.cam_raw.shape[-2:] == (4, 32)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()  # (1, 8, 8, 8)
    as_nchw = explain(net, x, "0", [1], guided=False)
    as_nhwc = explain(net, x, "0", [1], guided=False, layer_layout="nhwc")
    assert as_nchw.layout == "nchw" and as_nhwc.layout == "nhwc"
    assert torch.allclose(as_nhwc.activations, as_nchw.activations.permute(0, 3, 1, 2))
    assert "tokens" in _refusal(swin, x, "features.3.0.norm2", layer_layout="tokens")
    assert "unknown layer_layout 'chw'" in _refusal(swin, x, "norm", layer_layout="chw")


def test_a_model_that_resizes_inside_has_no_input_size_to_compare():
    """A detector's backbone sees its own resized image: its maps are read as NCHW (or NHWC where the
    layer's channels are last), whatever the caller's image size; tokens need the user's word."""
    assert recognise((1, 8, 16, 16), None) == Layout("nchw", (16, 16))
    assert recognise((1, 8, 16, 16), None, requested="nhwc") == Layout("nhwc", (8, 16))
    assert recognise((1, 7, 7, 96), None, module=nn.LayerNorm(96)) == Layout("nhwc", (7, 7))
    assert "set layer_layout" in str(recognise((1, 197, 768), None))
    assert recognise((1, 197, 768), None, requested="tokens") == Layout("tokens", (14, 14), 1)


def test_the_nchw_path_is_untouched():
    """An NCHW layer's activations are the layer's output itself, the maps those of the default call."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.randn(2, 3, 16, 16)
    plain = explain(net.eval(), x, "1", [0, 3], method=["gradcam", "scorecam"])
    forced = explain(net, x, "1", [0, 3], method=["gradcam", "scorecam"], layer_layout="nchw")
    for name in plain:
        assert torch.equal(plain[name].cam_raw, forced[name].cam_raw) and plain[name].layout == "nchw"


# ------------------------------------------------------------------------------ default layers


def test_the_default_layers_of_tiny_transformers():
    x = torch.zeros(1, 3, 32, 32)
    vit, swin, maxvit = built("vit").model, built("swin").model, built("maxvit").model
    assert default_layer(vit, x) == "encoder.layers.encoder_layer_1.ln_1"  # class token: norm1
    assert default_layer(swin, x) == "features.3.0.norm2"  # pooled: norm2
    assert default_layer(maxvit, x) == "blocks.1"  # attention on window partitions: its last map
    assert describe_default(vit, "encoder.layers.encoder_layer_1.ln_1") == "the last transformer block's first norm"
    assert describe_default(maxvit, "blocks.1") == "the last layer with a spatial output"
    # the ViT's default is the last layer with a map at the patches: the MLP's norm has none
    e = explain(vit, torch.randn(1, 3, 32, 32), "encoder.layers.encoder_layer_1.ln_2", [1], guided=False)
    assert float(e.cam_raw.abs().max()) == 0


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "layer"), [("vit_b_16", "encoder.layers.encoder_layer_11.ln_1"),
                                             ("swin_t", "features.7.1.norm2"), ("swin_v2_t", "features.7.1.norm2"),
                                             ("maxvit_t", "blocks.3")])
def test_the_default_layers_of_full_size_transformers(arch, layer):
    model = torchvision.models.get_model(arch, weights=None).eval()
    assert default_layer(model, torch.zeros(1, 3, 224, 224)) == layer


@pytest.mark.slow
def test_the_cli_explains_vit_b_16_at_its_default_layer(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "vit_b_16.pth"
    torch.save(_randomised_head(torchvision.models.vit_b_16(weights=None)).state_dict(), weights)
    out = tmp_path / "out"
    result = cli_runner.shared().run("classification.py", "-input_image_path", str(ROOT / "images" / "cat_dog.jpg"),
                                     "-arch", "vit_b_16", "-model_file", str(weights), "-label", "243",
                                     "-out_path", f"{out}/", timeout=300)
    assert result.returncode == 0, result.stderr
    assert ("Grad-CAM layer: encoder.layers.encoder_layer_11.ln_1 (the last transformer block's first norm; "
            "-layer_name chooses another)") in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["classify_gb_243.png", "classify_gb_gcam_243.png",
                                                     "classify_gcam_hm_243.png"]


# ------------------------------------------------------------------------------ guided backprop


class _GuidedGELU(torch.autograd.Function):
    """GELU with the guided rule written out: dx = max(dy, 0) * GELU'(x)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.nn.functional.gelu(x)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        phi = torch.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
        cdf = 0.5 * (1 + torch.erf(x / np.sqrt(2)))
        return dy.clamp_min(0) * (cdf + x * phi)


def test_guided_backprop_runs_through_a_vit_with_its_gelus_guided():
    case = built("vit")
    x = case.images[:1]
    ours = explain(case.model, x, case.layer, [ClassTarget(3)])
    assert ours.guided is not None and ours.unguided == ()
    gelus = [m for m in case.model.modules() if isinstance(m, nn.GELU)]
    assert gelus
    for m in gelus:
        m.forward = _GuidedGELU.apply  # type: ignore[method-assign]
    try:
        xg = x.clone().requires_grad_()
        (ref,) = torch.autograd.grad(case.model(xg)[0, 3], xg)
    finally:
        for m in gelus:
            del m.forward  # the class's own again
    xp = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(case.model(xp)[0, 3], xp)
    assert rel_err(ours.guided[0, 0], ref) < 1e-5
    assert rel_err(plain, ref) > 1e-2  # the guided rule changed something
