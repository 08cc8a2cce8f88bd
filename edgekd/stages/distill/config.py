"""The distill stage's recipe keys."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ...config.schema import MAX_EPOCHS, LossTerms, StageConfig, TrainingConfig, stage_config


@stage_config("distill")
class DistillConfig(TrainingConfig, StageConfig):
    """Knowledge distillation from the teacher into the student (METHODS.md, Hinton et al.)."""

    stage: Literal["distill"]
    order: ClassVar[int] = 1
    epochs: int = Field(15, ge=1, le=MAX_EPOCHS)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)

    def trained_losses(self) -> list[tuple[str, LossTerms]]:
        return [("loss", self.loss)]
