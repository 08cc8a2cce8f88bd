"""The distill stage's recipe keys."""

from __future__ import annotations

from typing import ClassVar, Literal

from ...config.schema import LossTerms, StageConfig, TrainingConfig, stage_config, training_keys


@stage_config("distill")
class DistillConfig(TrainingConfig, training_keys(15, 3e-3, 5e-4), StageConfig):
    """Knowledge distillation from the teacher into the student (METHODS.md, Hinton et al.)."""

    stage: Literal["distill"]
    order: ClassVar[int] = 1

    def trained_losses(self) -> list[tuple[str, LossTerms]]:
        return [("loss", self.loss)]
