"""What the three commands do alike with the options they share."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..paths import device_for, input_images


def run_fields(v: SimpleNamespace, image: str, out_dir: Path) -> dict[str, Any]:
    """The fields of a program's options (``ClassificationOptions`` ...) that come from the options all
    three scripts have: the images (``-input_image_path``, its default ``image``) and where their files
    go (``out_dir``, :func:`..paths.check_out_dir`'s), ``-input_sz``, ``-save_as_heatmap``,
    ``-save_overlay``, ``-gpuid`` (as a device), ``-batch_size``, and the CAM methods (``-method``
    and its modifiers, ``-layer_layout``; ``-batch_size`` also bounds a perturbation method's masked batch, and methods with
    many forwards show a progress bar on a terminal)."""
    from ...run.task import Methods  # imported here: it brings torch in

    methods = Methods(v.method, counterfactual=v.counterfactual, aug_smooth=v.aug_smooth, eigen_smooth=v.eigen_smooth,
                      batch_size=v.batch_size, progress=True, layer_layout=v.layer_layout)
    return dict(inputs=input_images("input_image_path", v.input_image_path, image, out_dir), input_sz=v.input_sz,
                save_as_heatmap=v.save_as_heatmap, save_overlay=v.save_overlay, device=device_for(v.gpuid),
                batch_size=v.batch_size, methods=methods)
