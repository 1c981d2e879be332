"""HiResCAM against pytorch-grad-cam's ``HiResCAM`` (with and without ``eigen_smooth``), and its
faithfulness: where the layer is followed by a flatten and one linear layer, the terms summed over the
map are the score minus the bias."""
from __future__ import annotations

import torch
from torch import nn

from gradcam_core import explain
from gradcam_core.engine.methods import LayerContext, lookup

from .conftest import assert_maps_close, pgc_map, pgc_projection


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="hirescam", guided=False)
    assert_maps_close(ours.cam_raw, pgc_map(case, "hirescam"), what=case.name)


def test_eigen_smooth_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="hirescam", guided=False,
                   eigen_smooth=True)
    assert_maps_close(ours.cam_raw, pgc_projection(case, "hirescam", eigen_smooth=True), what=case.name)


def test_terms_add_up_to_the_score_above_a_linear_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    expl = explain(model, x, "1", [0, 2], method="hirescam", guided=False)
    ctx = LayerContext(model=model, image=x, output=expl.scores, targets=[], target_scores=expl.target_scores,
                       activations=expl.activations,
                       gradients=model[3].weight[[0, 2]].reshape(1, 2, 4, 5, 5).expand(2, 2, 4, 5, 5),
                       layer_module=model[1])
    terms = lookup("hirescam").weighted_activations(ctx).sum(dim=(2, 3, 4))  # (N, K)
    torch.testing.assert_close(terms, expl.target_scores - model[3].bias[[0, 2]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(expl.cam_raw, ctx.gradients.mul(expl.activations[:, None]).sum(2).clamp_min(0))
