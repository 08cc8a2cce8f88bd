"""Distillation losses, in one registry (METHODS.md). Import order is the registry's order:
kd, kd-labelfree, nkd, dhkd, multi-teacher, taid, bdkd, pskd, layered-self, hint, spatial-attention, nd, ofa,
minilm, minilm-v2, tinybert-hidden, embedding-cosine, detection-score-kd, detection-box-kd, fgd.
"""

from . import logit, self_kd, feature, transformer, detection  # noqa: F401  (registration)
from .base import LOSSES, Batch, DistillTerm, SetupInfo

__all__ = ["LOSSES", "Batch", "DistillTerm", "SetupInfo"]
