"""Every method module, imported for its ``@register``; their order is the order ``--help`` lists them."""
from . import gradcam  # noqa: F401
from . import scorecam  # noqa: F401
from . import ablationcam  # noqa: F401
from . import fullgrad  # noqa: F401
