"""Stages register themselves on import; ``STAGES`` maps recipe names to stage functions."""

from . import distill, export, prune, quantize  # noqa: F401  (registration)
from .base import STAGES, StageContext

__all__ = ["STAGES", "StageContext"]
