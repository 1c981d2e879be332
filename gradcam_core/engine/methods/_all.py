"""Every method module, imported for its ``@register``; their order is the order ``--help`` lists them."""
# the order is the registration order (that of --help), not the alphabet
# isort: skip_file
from . import gradcam  # noqa: F401
from . import gradcam_plusplus  # noqa: F401
from . import xgradcam  # noqa: F401
from . import hirescam  # noqa: F401
from . import gradcam_elementwise  # noqa: F401
from . import layercam  # noqa: F401
from . import eigencam  # noqa: F401
from . import eigengradcam  # noqa: F401
from . import scorecam  # noqa: F401
from . import ablationcam  # noqa: F401
from . import fullgrad  # noqa: F401
