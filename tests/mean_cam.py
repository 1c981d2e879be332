"""A CAM method for the tests only, so that the front ends' method handling is tested with a second
method whatever the registry holds: ``test-mean+``, the mean of the layer's activations over its
channels, ReLU'd, the same map for every target (no gradients). Its name has a ``+`` so that the file
token rule shows (``test-meanp``).

Importing this module registers it (once per process); :func:`wrapper_script` writes a script that
registers it and then runs an entry script as ``python script args`` would, for the CLI tests, and
:data:`PRELUDE` does the same for a web server started by the tests."""
from __future__ import annotations

from pathlib import Path

import torch

from gradcam_core.engine.methods import CamMethod, LayerContext, method_names, register

NAME = "test-mean+"
TOKEN = "test-meanp"
HERE = Path(__file__).resolve().parent


def mean_map(activations: torch.Tensor, k: int) -> torch.Tensor:
    """The method's formula, written once more for the tests' own check: (N, C, h, w) -> (N, K, h, w)."""
    return activations.mean(dim=1, keepdim=True).clamp_min(0).expand(-1, k, -1, -1)


if NAME not in method_names():  # the real methods registered first, so they keep their order

    @register
    class MeanActivation(CamMethod):
        """L_k = ReLU((1 / C) sum_c A^c) for every target k (a test method, no paper)."""

        name = NAME
        summary = "Mean activation: the layer's channels averaged (a test method)"
        uses_gradients = False
        uses_target = False

        def compute(self, ctx: LayerContext, *, eigen_smooth: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
            k = len(ctx.targets)
            return ctx.activations.mean(dim=1, keepdim=True).clamp_min(0).expand(-1, k, -1, -1).contiguous(), None


PRELUDE = f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport mean_cam\n"
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
