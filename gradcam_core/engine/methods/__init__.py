"""CAM methods: one module per method, filed in ONE registry (:mod:`.base`).

* :mod:`.base`       :class:`CamMethod`, :class:`LayerContext`, ``register`` / ``lookup`` / ``method_names``
* :mod:`._all`       imports every method module (the registration order is the order of ``--help``)
* :mod:`.perturb`    what the perturbation methods share: scoring images with the layer replaced
* one module each:   :mod:`.gradcam`, ...

Adding a method: one module with a ``@register``-ed :class:`CamMethod` subclass (its formula and paper
in the docstring), one line in :mod:`._all`, and its test in ``tests/methods/``.
"""
from .base import CamMethod, LayerContext, first_component, lookup, method_names, register

__all__ = ["CamMethod", "LayerContext", "first_component", "lookup", "method_names", "register"]
