"""A CAM method for the tests only, so that the front ends' method handling is tested with a second
method whatever the registry holds: ``test-mean+``, the mean of the layer's activations over its
channels, ReLU'd, the same map for every target (no gradients). Its name has a ``+`` so that the file
token rule shows (``test-meanp``).

:func:`register_mean_cam` files it in a process's registry (:func:`mean_cam_registered`: for a block
only); :func:`wrapper_script` writes a script that registers it and then runs an entry script as
``python script args`` would, for the CLI tests, and :data:`PRELUDE` registers it in a web server
started by the tests."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from gradcam_core.engine.methods import CamMethod, LayerContext, method_names, register

NAME = "test-mean+"
TOKEN = "test-meanp"
HERE = Path(__file__).resolve().parent


def mean_map(activations: torch.Tensor, k: int) -> torch.Tensor:
    """The method's formula, written once more for the tests' own check: (N, C, h, w) -> (N, K, h, w)."""
    return activations.mean(dim=1, keepdim=True).clamp_min(0).expand(-1, k, -1, -1)


class MeanActivation(CamMethod):
    """L_k = ReLU((1 / C) sum_c A^c) for every target k (a test method, no paper)."""

    name = NAME
    summary = "Mean activation: the layer's channels averaged (a test method)"
    uses_gradients = False
    uses_target = False

    def compute(self, ctx: LayerContext, *, eigen_smooth: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = len(ctx.targets)
        return ctx.activations.mean(dim=1, keepdim=True).clamp_min(0).expand(-1, k, -1, -1).contiguous(), None


def register_mean_cam() -> None:
    """File the method in this process's registry (after the real methods, so they keep their order)."""
    if NAME not in method_names():
        register(MeanActivation)


@contextlib.contextmanager
def mean_cam_registered() -> Iterator[None]:
    """The method registered for the block only (a test in the pytest process: other tests' lists of
    the registered methods must not see it)."""
    from gradcam_core.engine.methods import base

    was = NAME in method_names()
    register_mean_cam()
    try:
        yield
    finally:
        if not was:
            base._METHODS.pop(NAME, None)


PRELUDE = f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport mean_cam\nmean_cam.register_mean_cam()\n"
"""Python that registers the method in a process (a web server's ``prelude``)."""


def wrapper_script(folder: Path, script: str) -> str:
    """A script in ``folder`` that registers the method, then runs the checkout's ``script`` (e.g.
    ``classification.py``) as ``__main__``; its path, for ``run_script``."""
    wrapper = folder / f"with_mean_cam_{script}"
    target = HERE.parent / script
    wrapper.write_text(PRELUDE + "import runpy\n"
                       f"sys.path[0] = {str(target.parent)!r}\n"
                       f"runpy.run_path({str(target)!r}, run_name='__main__')\n")
    return str(wrapper)
