"""Preflight: before anything trains, run one batch through every transformation a later stage needs.

Distillation can take hours; a model that cannot be traced for quantization, pruned through a
dependency graph or exported to ONNX should fail in seconds, not after it. Each stage registers its
check (``base.PREFLIGHTS``) and gets it on the model it will see (the teacher, or an ``arch`` student
after a distill stage; a width student is a narrowed copy of the teacher, so the teacher stands in for
it). A failure is the user's input (exit 2), naming the stage, the cause and the remedy.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..config.schema import Recipe
from .base import PREFLIGHTS, Preview


def preflight(recipe: Recipe, teacher: nn.Module, example: torch.Tensor, num_classes: int,
              head_width: int = 0) -> dict[str, float]:
    """Run every stage's preflight in recipe order; returns seconds per check (for the manifest)."""
    timings: dict[str, float] = {}
    preview = Preview(recipe, teacher, example, num_classes, model=teacher, head_width=head_width)
    for i, spec in enumerate(recipe.stages):
        where = f"stages.{i}"
        began = time.perf_counter()
        if spec.stage in PREFLIGHTS:
            PREFLIGHTS.get(spec.stage)(spec, preview, where)
        timings[f"{where}.{spec.stage}"] = round(time.perf_counter() - began, 3)
    return timings
