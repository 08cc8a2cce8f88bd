"""Group channel pruning's two ingredients (METHODS.md; "Group channel pruning and spatial attention
distilling for object detection"): sparse training with an L1 penalty on BN scales whose rate changes
over training, and layers grouped by the scale of the feature map they produce.

After sparse training, unimportant channels have near-zero BN scales; each scale group then gets its
own threshold on |gamma| (a global ranking inside the group), because scales learned at different
depths and resolutions are not comparable across groups.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

import torch
from torch import nn

from ...losses.base import Batch, DistillTerm, Params

Schedule = Literal["constant", "linear", "cosine"]


def l1_rate(start: float, end: float, schedule: Schedule, progress: float) -> float:
    """The penalty rate at ``progress`` in [0, 1]: ``start`` moving to ``end`` (constant: ``start``)."""
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class BNScaleL1(DistillTerm):
    """``rate(t) · Σ|γ|`` over the BatchNorm layers of the student (network slimming's penalty), with
    the rate following a schedule over the epochs. Holds no parameters of its own; the BN layers are
    kept in a plain list so they are not registered twice with the optimizer."""

    Params = Params
    needs_teacher = False
    needs_labels = False

    def __init__(self, start: float, end: float, schedule: Schedule) -> None:
        super().__init__(Params(), "sparse.l1")
        self.start, self.end, self.schedule = start, end, schedule
        self._bns: list[nn.Module] = []

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self._bns = [m for m in student.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]

    def forward(self, b: Batch) -> torch.Tensor:
        rate = l1_rate(self.start, self.end, self.schedule, b.progress)
        return rate * sum(m.weight.abs().sum() for m in self._bns)


def scale_groups(model: nn.Module, example: torch.Tensor, layers: list[str]) -> dict[str, list[str]]:
    """``{"HxW": [layer, ...]}``: the named layers grouped by the spatial size of their output
    (vector outputs, e.g. linear layers, group as ``"1x1"``), in the order the forward pass runs them."""
    modules = dict(model.named_modules())
    sizes: dict[str, str] = {}
    hooks = []
    for name in layers:
        def hook(_m, _i, out, name=name):
            sizes.setdefault(name, "x".join(str(s) for s in out.shape[-2:]) if out.ndim == 4 else "1x1")
        hooks.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sizes:  # insertion order = the order the hooks fired
        groups[sizes[name]].append(name)
    return dict(groups)
