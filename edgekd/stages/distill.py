"""The distill stage: train a narrower student against the teacher (METHODS.md, vanilla KD).

The student is a ``width``-scaled member of the teacher's family (the teacher's arch spec built with
``width=...``), or any arch spec given as ``student.arch``. Teacher logits are computed once.
"""

from __future__ import annotations

from functools import partial

from ..artifact import Artifact, config_hash, count_params_macs, save_torch
from ..checkpoint import build_model
from ..config import DistillConfig
from ..errors import RecipeError
from ..losses import LOSSES
from ..training import accuracy, fit
from .base import STAGES, StageContext, current


@STAGES.register("distill")
def distill(variants: dict[str, Artifact], cfg: DistillConfig, ctx: StageContext) -> list[Artifact]:
    source = current(variants)
    recipe, splits = ctx.recipe, ctx.splits
    arch, kwargs = _student_arch(source, recipe.student.arch, recipe.student.width)
    kwargs = {**kwargs, "num_classes": splits.num_classes, "in_channels": splits.input_shape[0]}
    student = build_model(arch, **kwargs)
    loss = partial(LOSSES.get(cfg.loss), temperature=cfg.temperature, alpha=cfg.alpha)
    result = fit(student, splits, lambda s, t, y: loss(s, t, y), epochs=cfg.epochs, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, batch_size=recipe.data.batch_size, seed=recipe.seed,
                 label="distill", teacher_logits=ctx.teacher_train_logits())
    params, macs = count_params_macs(student, splits.input_shape)
    metrics = {"val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
               "test_accuracy_torch": accuracy(student, splits.x_test, splits.y_test),
               "params": params, "macs": macs, "history": result.history}
    variant = "student-fp32"
    ctx.models[variant] = student
    chash = config_hash(cfg.model_dump(), recipe.student.model_dump(), source.config_hash)
    return [save_torch(student, ctx.stage_dir / variant, variant=variant, stage="distill",
                       parent=source.variant, arch=arch, arch_kwargs=kwargs, chash=chash, metrics=metrics)]


def _student_arch(source: Artifact, arch: str | None, width: float | None) -> tuple[str, dict]:
    if arch is not None:
        return arch, {}
    teacher_arch = source.meta.get("arch")
    if not teacher_arch:
        raise RecipeError("student.width derives the student from the teacher's arch, but the teacher "
                          "has none (a pickled module); give 'student: {arch: ...}'")
    return teacher_arch, {"width": width}
