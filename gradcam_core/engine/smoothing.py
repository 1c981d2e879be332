"""``aug_smooth``: maps averaged over augmented copies of the input."""
from __future__ import annotations

from typing import Any

from ..errors import GradCamError


def explain_augmented(explain_once: Any, *args: Any) -> Any:
    raise GradCamError("aug_smooth is not available yet")
