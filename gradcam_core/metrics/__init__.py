"""Metrics of saliency maps, as functions over (model, images, maps, targets), so maps made anywhere
(this package's methods, pytorch-grad-cam's, Captum's) can be scored alike. One module per family,
each with its paper and the formula as implemented:

* :mod:`.causal`        RISE's deletion and insertion curves and their AUC
* :mod:`.confidence`    the Grad-CAM++ paper's Average Drop % and Increase in Confidence %
* :mod:`.road`          ROAD most- and least-relevant-first (noisy linear imputation)
* :mod:`.localization`  the Grad-CAM paper's weakly-supervised localization, the pointing game
* :mod:`.scoring`       the score a metric follows (a class's softmax probability by default), batches

Images are net inputs (N, C, H, W), maps (N, H, W) at the input's size, targets one per image (a
0-based class index or a callable over the model output). ROAD and localization need SciPy (the
``evaluate`` extra).
"""
from .causal import Curves, auc, deletion, insertion
from .confidence import ConfidenceChange, confidence_change
from .localization import Box, iou, localization, map_box, pointing
from .road import PERCENTILES, impute, road
from .scoring import ClassProbability, unit_maps

__all__ = ["Box", "ClassProbability", "ConfidenceChange", "Curves", "PERCENTILES", "auc", "confidence_change",
           "deletion", "impute", "insertion", "iou", "localization", "map_box", "pointing", "road", "unit_maps"]
