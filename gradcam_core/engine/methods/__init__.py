"""CAM methods: one module per method, filed in ONE registry (:mod:`.base`).

* :mod:`.base`       :class:`CamMethod`, :class:`LayerContext`, ``register`` / ``lookup`` / ``method_names``
* :mod:`._all`       imports every method module (the registration order is the order of ``--help``);
                     this package imports it, so importing any method module registers them all
* :mod:`.perturb`    what the perturbation methods share: their batch sizes and progress bar
* one module each:   :mod:`.gradcam`, ...

Adding a method: one module with a ``@register``-ed :class:`CamMethod` subclass (its formula and paper
in the docstring), one line in :mod:`._all`, and its test in ``tests/methods/``.
"""
# every method registered, in --help's order, before any of their modules is used
from . import _all  # noqa: F401
from .base import CamMethod, LayerContext, first_component, lookup, method_names, register

__all__ = ["CamMethod", "LayerContext", "first_component", "lookup", "method_names", "register"]
