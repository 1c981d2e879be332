"""Every method on a layer with a constant channel, an all-zero channel and all-zero activations, for a
target whose gradient is zero everywhere: finite maps (no 0 / 0), zero where nothing is explained."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_core import explain
from gradcam_core.engine.methods import method_names

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam", "eigencam",
           "eigengradcam"]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 4)).eval()
    with torch.no_grad():
        net[0].weight[:2] = 0
        net[0].bias[0] = 0.7  # channel 0: constant 0.7
        net[0].bias[1] = 0.0  # channel 1: all zero
    return net


def test_methods_are_registered_in_help_order():
    assert method_names()[: len(METHODS)] == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_finite_maps_for_constant_channels_and_zero_gradients(method):
    net = _net()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = [1, lambda out: 0 * out[:, 0]]  # the second one's gradient is zero everywhere
    expl = explain(net, x, "1", targets, method=method, guided=False)
    assert torch.isfinite(expl.cam_raw).all() and torch.isfinite(expl.cam).all()
    assert expl.weights is None or torch.isfinite(expl.weights).all()
    if method != "eigencam":
        assert (expl.cam_raw[:, 1] == 0).all()
    assert (expl.cam_raw[:, 0] > 0).any()
    silent = explain(net, torch.zeros(2, 3, 8, 8), "1", targets, method=method, guided=False)  # A = bias only
    assert torch.isfinite(silent.cam_raw).all()
    nothing = explain(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 2)).eval(),
                      -torch.ones(1, 3, 8, 8), "1", [0], method=method, guided=False)
    assert torch.isfinite(nothing.cam_raw).all()


@pytest.mark.slow  # a fresh interpreter (2 s)
def test_help_order_does_not_depend_on_which_method_module_was_imported_first():
    """A method module imported first, in a fresh interpreter: the names still come in ``_all``'s order."""
    import subprocess
    import sys

    code = ("import gradcam_core.engine.methods.fullgrad, gradcam_core.engine.methods.scorecam\n"
            "from gradcam_core.engine.methods import method_names\nprint(','.join(method_names()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split(",") == method_names()
    assert method_names()[: len(METHODS)] == METHODS
