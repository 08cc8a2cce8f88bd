"""Distillation losses, in one registry (METHODS.md, "Logit distillation").

A loss takes student logits, teacher logits and labels and returns a scalar; hyper-parameters come
from the recipe. Issue 3 grows this registry; every name here is a test case.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import RecipeError
from .registry import Registry


class DistillLossFn(Protocol):
    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
                 temperature: float, alpha: float) -> torch.Tensor: ...


LOSSES: Registry[DistillLossFn] = Registry("loss", RecipeError)


@LOSSES.register("kd")
def vanilla_kd(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
               temperature: float, alpha: float) -> torch.Tensor:
    """Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015).

    ``(1-α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))``; T² keeps gradients comparable across T.
    """
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student, labels)
    return (1.0 - alpha) * hard + alpha * (t * t) * soft
