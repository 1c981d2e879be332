"""Every method module, imported for its ``@register``; their order is the order ``--help`` lists them
(so not sorted by name)."""
# ruff: noqa: I001
from . import gradcam  # noqa: F401
from . import scorecam  # noqa: F401
from . import ablationcam  # noqa: F401
from . import fullgrad  # noqa: F401
