"""What a recipe names outside its stages, checked before anything trains: extra teachers' checkpoints,
and (for an embedding run) that every loss matches embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Recipe
from ..errors import CheckpointError, RecipeError
from ..models.teacher import extra_teachers
from ..stages import StageContext


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


def check_names(rec: Recipe, ctx: StageContext, embedding: bool) -> None:
    """Extra teachers' checkpoints (loaded as safely as the main one) and, for an embedding run, that every
    loss matches embeddings: a wrong one fails now, not after earlier stages trained. Each stage's own
    names (its losses' modules) are checked by its preflight."""
    for i, spec in enumerate(rec.stages):
        if embedding:
            _check_embedding_losses(spec, i)
    for path, arch in extra_teachers(rec):  # found before the first stage trains, not after distillation
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: teacher checkpoint file not found (a multi-teacher loss's teachers:)")
        ctx.load_extra_teacher(path, arch)
