"""The distill stage: train the student against the teacher with the recipe's weighted loss terms.

The student is any arch spec (``student.arch``) or a ``width``-narrowed copy of the teacher made by
Torch-Pruning (so any CNN family works, not just edgekd's zoo), keeping the teacher's weights on the
kept channels unless ``student.init: random``. After a ``prune`` stage, the pruned model is the
student and distillation continues from it (``student:`` is then not used).
"""

from __future__ import annotations

import copy

import torch

from ...artifacts.artifact import Artifact, config_hash, count_params_macs, save_torch
from ...models.checkpoint import build_model
from ...config.schema import StudentSpec
from .config import DistillConfig
from ...errors import first_line
from ..channels import channel_plan, uniform_width
from ...train.evaluate import accuracy
from ..base import PREFLIGHTS, STAGES, Preview, StageContext, current, preflight_error, role_of
from ..students import check_loss_names, kept_layers, measured_depth
from .layer_choice import choose_layers


@STAGES.register("distill")
def distill(variants: dict[str, Artifact], cfg: DistillConfig, ctx: StageContext) -> list[Artifact]:
    source = current(variants)
    recipe, splits = ctx.recipe, ctx.splits
    student, arch, kwargs, extra = _make_student(variants, source, ctx)
    objective, outputs = ctx.objective(cfg.loss, f"{ctx.stage_key_path}.loss", student)
    result = ctx.train(student, objective, outputs, cfg.train_spec(), label="distill")
    params, macs = count_params_macs(student, splits.input_shape)
    metrics = {"val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
               "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
               "teacher_outputs": "online" if outputs is not None and outputs.online else
                                  ("cached" if outputs is not None else "none"),
               "test_accuracy_torch": accuracy(student, splits, "test", ctx.device),
               "params": params, "macs": macs, "history": result.history,
               "cpu_threads": torch.get_num_threads(), **ctx.device.to_json()}  # CPU results repeat bit for bit at the same count
    variant = "student-fp32"
    ctx.models[variant] = student
    chash = config_hash(cfg.model_dump(), recipe.student.model_dump(), source.config_hash)
    # a continued (pruned) student replaces its source: its lineage points at what that came from
    parent = source.parent if source.variant == variant else source.variant
    meta = {"arch": arch, "arch_kwargs": kwargs, "metrics": metrics, **extra}
    return [save_torch(student, ctx.stage_dir / variant,
                       Artifact(variant, "torch", "fp32", "", "distill", parent, chash, meta))]


def _make_student(variants: dict[str, Artifact], source: Artifact,
                  ctx: StageContext) -> tuple[torch.nn.Module, str, dict, dict]:
    """The untrained student, its rebuild recipe (arch, kwargs) and extra artifact metadata."""
    spec, splits = ctx.recipe.student, ctx.splits
    kwargs = {"num_classes": ctx.head_width, "in_channels": splits.input_shape[0]}
    if role_of(source.variant) == "student":  # a prune stage made the student: distillation continues it
        student = copy.deepcopy(ctx.model(variants, source.variant))
        metrics = source.meta.get("metrics", {})
        extra = {"channels": source.meta["channels"], "input_shape": source.meta["input_shape"],
                 "derived": {**source.meta.get("derived", {}), "continued_by": "distill"},
                 "pruned": {k: metrics.get(k) for k in ("params_before", "macs_before", "params", "macs", "latency")
                            if k in metrics}}
        return student, source.meta.get("arch") or "", source.meta.get("arch_kwargs", kwargs), extra
    if spec.arch is not None:
        torch.manual_seed(ctx.recipe.seed)
        if spec.arch_args:
            kwargs = {**kwargs, "arch_args": spec.arch_args}
        return build_model(spec.arch, **kwargs), spec.arch, kwargs, {}
    if spec.layers is not None:  # a text teacher's layers, every other one or those named
        from ...models.text import drop_layers, encoder_layers

        teacher = ctx.model(variants, source.variant)
        depth, derived = len(encoder_layers(teacher)[1]), {"from": source.variant}
        if spec.layers == "measured":
            keep, derived["layer_scores"] = choose_layers(teacher, splits, measured_depth(spec, depth), ctx.device,
                                                          ctx.recipe.seed)
        else:
            keep = kept_layers(spec, depth)
        student = drop_layers(teacher, keep).requires_grad_(True)  # the teacher's copy was frozen
        kwargs = source.meta.get("arch_kwargs", kwargs)
        kwargs = {**kwargs, "arch_args": {**kwargs.get("arch_args", {}), "layers": keep}}
        return student, source.meta.get("arch") or "", kwargs, {"derived": {**derived, "layers": keep}}
    width = spec.width if spec.width is not None else 0.5
    teacher = ctx.model(variants, source.variant)
    torch.manual_seed(ctx.recipe.seed)
    student = uniform_width(teacher, splits.example(1), width, ctx.head_width, keep_weights=spec.init == "pruned")
    extra = {"channels": channel_plan(student), "input_shape": list(splits.input_shape),
             "derived": {"from": source.variant, "width": width, "init": spec.init}}
    return student, source.meta.get("arch") or "", source.meta.get("arch_kwargs", kwargs), extra


@PREFLIGHTS.register("distill")
def preflight_distill(cfg: DistillConfig, preview: Preview, where: str) -> None:
    """The losses' module names in the teacher and the student they will meet (a student an earlier stage
    made keeps the teacher's names); an ``arch`` student built and run on one batch, and handed on."""
    recipe = preview.recipe
    student_spec = StudentSpec(width=1.0) if preview.student_made else recipe.student
    check_loss_names(cfg.loss, f"{where}.loss", student_spec, preview.teacher, preview.head_width,
                     preview.example.shape[1])
    if preview.student_made or recipe.student.arch is None:
        return
    torch.manual_seed(recipe.seed)
    student = build_model(recipe.student.arch, num_classes=preview.head_width, in_channels=preview.example.shape[1],
                          arch_args=recipe.student.arch_args).eval()
    try:
        with torch.no_grad():
            student(preview.example)
    except Exception as exc:  # noqa: BLE001 - any failure here is the student's
        raise preflight_error(where, "distill", f"the student {recipe.student.arch} fails on one batch "
                              f"({first_line(exc, with_type=True)})", "check student.arch and student.arch_args") from None
    preview.model = student
