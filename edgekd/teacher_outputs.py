"""Teacher outputs for training: cached once when inputs do not change, computed online when they do.

Without augmentation a teacher sees the same train sample every epoch, so its logits and tapped
features are computed once for the whole split and looked up by sample index; that makes a KD epoch
cost about what a plain epoch costs. With augmentation, or when the features would not fit in the
memory limit, the teacher runs on every batch. The choice is made here, automatically, and logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .features import Tap, capture

CACHE_LIMIT_MB = float(os.environ.get("EDGEKD_TEACHER_CACHE_MB", "1024"))
_LAST: dict[tuple, "TeacherOutputs"] = {}  # the last cache made, so the QAT stage reuses distill's


@torch.no_grad()
def _run(teachers: list[nn.Module], taps: list[Tap], x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    feats: dict[str, torch.Tensor] = {}
    with capture(teachers[0], taps, feats):
        logits = [t.eval()(x) for t in teachers]
    return logits, {k: v.detach() for k, v in feats.items()}


@dataclass
class TeacherOutputs:
    """Logits of each teacher (the run's teacher first) and the main teacher's tapped features."""

    teachers: list[nn.Module]
    taps: list[Tap]
    key: str                     # hash of the teacher checkpoint, data and seed: what the cache is valid for
    online: bool
    reason: str
    _logits: list[torch.Tensor] = field(default_factory=list)
    _features: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def prepare(cls, teachers: list[nn.Module], taps: list[Tap], x_train: torch.Tensor, *, augmented: bool,
                key: str, batch_size: int = 256) -> "TeacherOutputs":
        if augmented:
            return cls(teachers, taps, key, True, "inputs are augmented, so the teacher runs on every batch")
        logits, feats = _run(teachers, taps, x_train[:1])
        per_sample = sum(t.numel() for t in logits) + sum(f.numel() for f in feats.values())
        mb = per_sample * len(x_train) * 4 / 2 ** 20
        if mb > CACHE_LIMIT_MB:
            return cls(teachers, taps, key, True, f"cached outputs would take {mb:.0f} MB "
                       f"(> EDGEKD_TEACHER_CACHE_MB={CACHE_LIMIT_MB:.0f}), so the teacher runs on every batch")
        memo = (key, tuple(t.key for t in taps), tuple(id(t) for t in teachers), len(x_train))
        if memo in _LAST:  # the memo holds the teachers, so their ids cannot be reused meanwhile
            return _LAST[memo]
        out = cls(teachers, taps, key, False, f"inputs are not augmented, so teacher outputs ({mb:.2f} MB) "
                  f"are computed once and reused every epoch")
        parts = [_run(teachers, taps, x_train[i:i + batch_size]) for i in range(0, len(x_train), batch_size)]
        out._logits = [torch.cat([p[0][k] for p in parts]) for k in range(len(teachers))]
        out._features = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
        _LAST.clear()
        _LAST[memo] = out
        return out

    def __call__(self, index: torch.Tensor, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Outputs for train samples ``index`` whose (possibly augmented) inputs are ``x``."""
        if self.online:
            return _run(self.teachers, self.taps, x)
        return [t[index] for t in self._logits], {k: v[index] for k, v in self._features.items()}

    def all_features(self, tap: Tap, x_train: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """One tapped feature of the main teacher over the whole (unaugmented) train split."""
        if not self.online and tap.key in self._features:
            return self._features[tap.key]
        return torch.cat([_run(self.teachers[:1], [tap], x_train[i:i + batch_size])[1][tap.key]
                          for i in range(0, len(x_train), batch_size)])
