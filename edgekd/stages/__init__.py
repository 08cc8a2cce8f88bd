"""Stages register themselves on import; ``STAGES`` maps recipe names to stage functions."""

from . import channels, distill, export, prune, quantize  # noqa: F401  (registration; channels rebuilds float artifacts)
from .base import STAGES, StageContext

__all__ = ["STAGES", "StageContext"]
