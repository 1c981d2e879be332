"""neuraltalk2 (karpathy) checkpoints, as grad-cam ran them."""
from .model import *  # noqa: F401,F403
from .model import DEFAULT_CAPTION, MAX_SEQ_LENGTH, UNK  # noqa: F401
