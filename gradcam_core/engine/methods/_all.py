"""Every method module, imported for its ``@register``; their order is the order ``--help`` lists them."""
from . import gradcam  # noqa: F401
