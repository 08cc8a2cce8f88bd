"""Names a recipe's stages will look up, checked before anything trains: loss modules in the teacher and
student, extra teachers' checkpoints, and (for an embedding run) that every loss matches embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import DistillConfig, PruneConfig, Recipe, StudentSpec
from ..errors import CheckpointError, RecipeError
from ..models.teacher import extra_teachers
from ..stages import StageContext
from ..stages.distill.stage import check_loss_names


EMBEDDING_LOSSES = ("embedding-cosine", "minilm", "minilm-v2", "tinybert-hidden", "hint")


def _check_embedding_losses(spec: Any, i: int) -> None:
    """An embedding run's models output embeddings, not class logits, and its data has no labels: a logit
    loss there (``kd``, the default) would soften embedding dimensions as if they were classes."""
    trains = [("loss", getattr(spec, "loss", None))] if getattr(spec, "mode", "qat") == "qat" else []
    recovery = getattr(spec, "recovery", None)
    if recovery is not None and recovery.loss:
        trains.append(("recovery.loss", recovery.loss))
    for where, terms in trains:
        for j, term in enumerate(terms or []):
            if term.name not in EMBEDDING_LOSSES:
                raise RecipeError(f"stages.{i}.{where}.{j}: {term.name!r} matches class logits; an embedding run "
                                  f"trains with {', '.join(EMBEDDING_LOSSES)} (e.g. loss: [{{name: "
                                  f"embedding-cosine}}])")


def check_names(rec: Recipe, teacher: Any, splits: Any, ctx: StageContext) -> None:
    """Loss module names and extra teachers: a wrong one fails now, not after earlier stages trained."""
    for i, spec in enumerate(rec.stages):
        pruned_before = any(isinstance(s, PruneConfig) for s in rec.stages[:i])
        if isinstance(spec, DistillConfig):
            check_loss_names(spec.loss, f"stages.{i}.loss", StudentSpec(width=1.0) if pruned_before else rec.student,
                             teacher, splits.num_classes, splits.input_shape[0])
        if isinstance(spec, PruneConfig) and spec.recovery.loss:  # a pruned model keeps the teacher's names
            check_loss_names(spec.recovery.loss, f"stages.{i}.recovery.loss", StudentSpec(width=1.0), teacher,
                             splits.num_classes, splits.input_shape[0])
        if splits.embedding_targets is not None:
            _check_embedding_losses(spec, i)
    for path, arch in extra_teachers(rec):  # found before the first stage trains, not after distillation
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: teacher checkpoint file not found (a multi-teacher loss's teachers:)")
        ctx.load_extra_teacher(path, arch)


