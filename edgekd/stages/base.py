"""What every stage shares: the run context, the registry, and getting models out of artifacts.

A stage is a function ``(variants, config, ctx) -> list[Artifact]``: it reads the variants made so
far (the last one is the model it works on), writes only inside ``ctx.stage_dir``, and returns the
new variants. Stages never see backends. Ordering rules live in ``config.Recipe`` (distill ->
quantize -> export).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..artifact import Artifact, rebuild_float, rebuild_int8
from ..config import Recipe
from ..data import Splits
from ..errors import RecipeError, StageError
from ..registry import Registry
from ..training import predict_logits


@dataclass
class StageContext:
    """Everything a stage may use besides its own config; built once per run by the pipeline."""

    run_dir: Path
    stage_dir: Path
    recipe: Recipe
    splits: Splits
    teacher: nn.Module
    models: dict[str, nn.Module] = field(default_factory=dict)  # in-memory models by variant
    _teacher_train_logits: torch.Tensor | None = None

    def teacher_train_logits(self) -> torch.Tensor:
        """Teacher logits on the train split, computed once: inputs are not augmented, so they
        are the same every epoch and for every stage that distils."""
        if self._teacher_train_logits is None:
            self._teacher_train_logits = predict_logits(self.teacher, self.splits.x_train)
        return self._teacher_train_logits

    def model(self, variants: dict[str, Artifact], name: str) -> nn.Module:
        """The torch module of a variant: from memory, else rebuilt from its artifact (resume)."""
        if name not in self.models:
            art = variants[name]
            if art.kind == "torch":
                self.models[name] = rebuild_float(art)
            elif art.kind == "torch-int8":
                self.models[name] = rebuild_int8(art, self.model(variants, art.parent or ""))
            else:
                raise StageError(f"variant {name!r} is a {art.kind} artifact, not a torch model")
        return self.models[name]


StageFn = Callable[[dict[str, Artifact], Any, StageContext], list[Artifact]]
STAGES: Registry[StageFn] = Registry("stage", RecipeError)


def current(variants: dict[str, Artifact]) -> Artifact:
    """The variant a transforming stage works on: the most recent torch artifact."""
    return [a for a in variants.values() if a.kind != "onnx"][-1]


def role_of(variant: str) -> str:
    """``student-fp32`` -> ``student``."""
    return variant.rsplit("-", 1)[0]
