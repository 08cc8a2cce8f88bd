"""What a recipe names outside its stages, checked before anything trains: extra teachers' checkpoints,
and that every loss a stage trains with fits the task's outputs."""

from __future__ import annotations

from pathlib import Path

from ..config.schema import Recipe
from ..errors import CheckpointError, RecipeError
from .teacher import extra_teachers
from ..stages import StageContext
from ..tasks import Task


def check_losses_fit(rec: Recipe, task: Task) -> None:
    """Every loss each stage trains with (``StageConfig.trained_losses``) fits the task's outputs: an
    embedding run's ``kd`` fails now, not after earlier stages trained."""
    for i, spec in enumerate(rec.stages):
        for where, terms in spec.trained_losses():
            for j, term in enumerate(terms):
                problem = task.loss_problem(term.name)
                if problem is not None:
                    raise RecipeError(f"stages.{i}.{where}.{j}: {problem}")


def check_names(rec: Recipe, ctx: StageContext, task: Task) -> None:
    """Extra teachers' checkpoints (loaded as safely as the main one); the losses against the task were
    checked before the teacher ran (``check_losses_fit``). Each stage's own names (its losses' modules) are
    checked by its preflight."""
    for path, arch in extra_teachers(rec):  # found before the first stage trains, not after distillation
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: teacher checkpoint file not found (a multi-teacher loss's teachers:)")
        ctx.load_extra_teacher(path, arch)
