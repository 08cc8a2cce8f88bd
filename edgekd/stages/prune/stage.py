"""The prune stage: structured channel pruning of the teacher, then recovery by distillation from it.

Channels are removed through Torch-Pruning's dependency graph (``pruning.prune_channels``); what to
remove is chosen by one of five methods (``PruneConfig``). The pruned model is fine-tuned against the
unpruned teacher (``recovery``; default loss ``kd`` plus spatial attention at the last layer of every
feature-map scale, which needs no channel match), and saved as the ``student-fp32`` variant: its
architecture spec plus a channel plan, so it reloads without pickled code. A later ``distill`` stage
continues from it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from ...artifacts.artifact import Artifact, config_hash, count_params_macs, save_torch
from ...config.schema import LossTerm, StudentSpec
from .config import PruneConfig, SparseTraining
from ...errors import EdgekdError, RecipeError, StageError, first_line
from ..exporting import export_fp32
from ..layer_patterns import match_layers
from ...losses.base import DistillTerm
from ...progress import console
from ..channels import Cut, channel_groups, channel_plan, prune_channels
from ...train.evaluate import accuracy
from ...train.objective import CrossEntropy, Objective
from ..base import PREFLIGHTS, STAGES, Preview, StageContext, current, preflight_error
from ..students import check_loss_names
from .latency_lut import build_table, search_plan, table_key
from .sparsity import BNScaleL1, scale_groups

VARIANT = "student-fp32"


@STAGES.register("prune")
def prune(variants: dict[str, Artifact], cfg: PruneConfig, ctx: StageContext) -> list[Artifact]:
    source = current(variants)
    splits, recipe, key = ctx.splits, ctx.recipe, ctx.stage_key_path
    example = splits.example(1)
    model = copy.deepcopy(ctx.model(variants, source.variant)).eval()
    params_before, macs_before = count_params_macs(model, splits.input_shape)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ignore = sorted({n for i, p in enumerate(cfg.ignore) for n in match_layers(p, layers, f"{key}.ignore.{i}")})
    groups = channel_groups(model, example, ctx.head_width, _ranking_importance(cfg), ignore)
    if not groups:
        raise StageError(f"{key}: this model has no prunable channel group (all ignored or class-score layers)")
    scales = scale_groups(model, example, [g.root for g in groups])
    metrics: dict[str, Any] = {"method": cfg.method, "groups": len(groups),
                               "scale_groups": {s: len(v) for s, v in scales.items()}}

    gradients = _taylor_gradients(splits, recipe.data.batch_size) if cfg.importance == "taylor" else None
    base = Cut(cfg.ratio, importance=cfg.importance, round_to=cfg.round_to, ignore=ignore)

    def cut(target: nn.Module, how: Cut) -> dict[str, tuple[int, int]]:
        return prune_channels(target, example, how, num_classes=ctx.head_width, gradients=gradients)

    if cfg.method == "gcp":
        metrics["sparse_training"] = _sparse_train(model, cfg, ctx)
        removed: dict[str, tuple[int, int]] = {}
        for scale, roots in scales.items():  # one |γ| threshold per feature-map scale
            ratio = cfg.group_ratios.get(scale, cfg.ratio)
            others = [g.root for g in groups if g.root not in roots]
            removed.update(cut(model, replace(base, ratio=ratio, global_ranking=True, importance="bn-scale",
                                              max_layer_ratio=cfg.max_layer_ratio, ignore=ignore + others)))
        unknown = set(cfg.group_ratios) - set(scales)
        if unknown:
            raise RecipeError(f"{key}.group_ratios: no feature-map scale {sorted(unknown)[0]!r}; "
                              f"this model's scales: {', '.join(scales)}")
    elif cfg.method == "latency":
        model, removed, metrics["latency"] = _latency_driven(model, cfg, ctx, groups, base, cut)
    elif cfg.method == "groups":
        ratios = _pattern_ratios(cfg.group_ratios, [g.root for g in groups], f"{key}.group_ratios")
        removed = cut(model, replace(base, layer_ratios=ratios))
    else:
        removed = cut(model, replace(base, global_ranking=cfg.method == "global", max_layer_ratio=cfg.max_layer_ratio))

    if not removed and cfg.method != "latency":
        raise StageError(f"{key}: method {cfg.method!r} removed no channel (importance scores all tied, or every "
                         f"ratio 0); try importance l1, or method uniform")
    params, macs = count_params_macs(model, splits.input_shape)
    metrics.update(pruned_val_accuracy=accuracy(model, splits, "val"),
                   params_before=params_before, macs_before=macs_before, params=params, macs=macs,
                   layers_pruned={n: list(v) for n, v in removed.items()})
    console.print(f"prune: {len(removed)} layer(s) narrowed; params {params_before} -> {params}, "
                  f"MACs {macs_before} -> {macs}; accuracy before recovery {metrics['pruned_val_accuracy']:.4f}")
    metrics["recovery"] = _recover(model, cfg, ctx, scales)
    metrics.update(val_accuracy=accuracy(model, splits, "val", ctx.device),
                   test_accuracy_torch=accuracy(model, splits, "test", ctx.device))
    if cfg.method == "latency":
        metrics["latency"]["measured_after_recovery_ms"] = _latency_of(ctx, cfg.latency.target)[0](model)
    ctx.models[VARIANT] = model
    chash = config_hash(cfg.model_dump(), source.config_hash)
    extra = {"channels": channel_plan(model), "input_shape": list(splits.input_shape),
             "derived": {"from": source.variant, "stage": "prune", "method": cfg.method}}
    meta = {"arch": source.meta.get("arch", ""), "arch_kwargs": source.meta.get("arch_kwargs", {}),
            "metrics": metrics, **extra}
    return [save_torch(model, ctx.stage_dir / VARIANT,
                       Artifact(VARIANT, "torch", "fp32", "", "prune", source.variant, chash, meta))]


def _pattern_ratios(patterns: dict[str, float], roots: list[str], key: str) -> dict[str, float]:
    """Root layer -> ratio for the groups the patterns name (first pattern wins)."""
    chosen: dict[str, float] = {}
    for pattern, ratio in patterns.items():
        for name in match_layers(pattern, roots, f"{key}.{pattern}"):
            chosen.setdefault(name, ratio)
    return chosen


def _ranking_importance(cfg: PruneConfig) -> str:
    # the latency table ranks by a gradient-free score; Taylor's gradients apply when channels are removed
    return "l1" if cfg.importance == "taylor" else cfg.importance


def _taylor_gradients(splits, batch_size: int):
    """Accumulate cross-entropy gradients over a few train batches (first-order Taylor importance)."""

    def run(model: nn.Module) -> None:
        model.eval()
        for x, y, _ in splits.loader("train", batch_size, limit=4 * batch_size):
            loss = nn.functional.cross_entropy(model(x), y.clamp_min(0))
            loss.backward()

    return run


def _sparse_train(model: nn.Module, cfg: PruneConfig, ctx: StageContext) -> dict[str, Any]:
    """GCP's sparse training: the task loss plus a scheduled L1 penalty on BN scales."""
    sparse = cfg.sparse or SparseTraining()
    l1 = BNScaleL1(sparse.l1, sparse.l1_final, sparse.schedule)
    l1.bind(model, None)
    if not l1._bns:
        raise RecipeError(f"{ctx.stage_key_path}.method: 'gcp' needs BatchNorm layers (it penalises their scales); "
                          "this model has none: use uniform, global or latency")
    terms: list[tuple[str, float, DistillTerm]] = [("ce", 1.0, CrossEntropy(None, "ce")), ("sparse.l1", 1.0, l1)]
    result = ctx.train(model, Objective(terms), None, sparse.train_spec(), label="prune (sparse training)",
                       augment=False, state_file="sparse_state.pt")
    gammas = torch.cat([m.weight.detach().abs() for m in l1._bns])
    return {"epochs": sparse.epochs, "val_accuracy": result.best_val_accuracy,
            "bn_scale_below_1e-2": float((gammas < 1e-2).float().mean()), "history": result.history}


def _latency_of(ctx: StageContext, target: str) -> tuple[Callable[[nn.Module], float], dict[str, Any]]:
    """(model -> p50 ms on ``target``, the target's settings): each model is exported inside the stage
    folder and timed by the target's backend."""
    if ctx.latency_probe is None:
        raise StageError(f"{ctx.stage_key_path}.latency: this run cannot time models on a target")
    probe, settings = ctx.latency_probe(target)
    path = ctx.stage_dir / "latency_probe.onnx"
    example = ctx.splits.example(1, "test")

    def ms(model: nn.Module) -> float:
        export_fp32(model, example, path, 17)
        return probe(path)

    return ms, settings


def _latency_driven(model: nn.Module, cfg: PruneConfig, ctx: StageContext, groups, base: Cut,
                    cut: Callable[[nn.Module, Cut], dict[str, tuple[int, int]]]):
    """Ratios from the measured latency table, each plan pruned and timed for real, re-planned after a
    miss (``latency_lut.search_plan``)."""
    goal = cfg.latency
    latency_of, target_settings = _latency_of(ctx, goal.target)
    tkey = table_key(shape_hash(model), target_settings, ctx.splits.input_shape, goal.steps, cfg.round_to,
                     base.ignore)
    table = build_table(model, groups, goal.steps, latency_of=latency_of,
                        prune_rows=lambda m, ratios: cut(m, replace(base, ratio=0.0, layer_ratios=ratios)),
                        target=target_settings["name"], key=tkey, log=console.print)
    pruned: list[tuple[nn.Module, dict]] = []

    def measure(ratios: dict[str, float]) -> float:
        candidate = copy.deepcopy(model)
        pruned.append((candidate, cut(candidate, replace(base, ratio=0.0, layer_ratios=ratios))))
        return latency_of(candidate)

    attempts, kept = search_plan(table, groups, goal.max_latency_ms, f"{ctx.stage_key_path}.latency.max_latency_ms",
                                 measure, goal.attempts, log=console.print)
    best = attempts[kept]
    met = best.measured_ms <= goal.max_latency_ms
    if not met:
        console.print(f"prune (latency): the budget {goal.max_latency_ms:.3f} ms was not met; best "
                      f"measured {best.measured_ms:.3f} ms", style="yellow")
    result = {"target": target_settings["name"], "budget_ms": goal.max_latency_ms, "base_ms": table.base_ms,
              "table": table.to_json(), "attempts": [a.to_json() for a in attempts], "kept_attempt": kept,
              "met": met, **{k: getattr(best, k) for k in ("predicted_ms", "measured_ms", "ratios",
                                                            "importance_removed")}}
    return *pruned[kept], result


def shape_hash(model: nn.Module) -> str:
    """A hash of the model's tensor shapes: latency tables depend on shapes, not on weight values."""
    return config_hash(sorted((k, list(v.shape)) for k, v in model.state_dict().items()))


def _recover(model: nn.Module, cfg: PruneConfig, ctx: StageContext, scales: dict[str, list[str]]) -> dict[str, Any]:
    """Fine-tune the pruned model against the unpruned teacher with the recovery loss."""
    rec = cfg.recovery
    if rec.epochs == 0:
        return {"epochs": 0}
    terms = rec.loss or default_recovery_loss(scales)
    objective, outputs = ctx.objective(terms, f"{ctx.stage_key_path}.recovery.loss", model)
    result = ctx.train(model, objective, outputs, rec.train_spec(), label="prune (recovery)")
    return {"epochs": rec.epochs, "loss": [t.model_dump() for t in terms], "val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch, "history": result.history}


def default_recovery_loss(scales: dict[str, list[str]]) -> list[LossTerm]:
    """``kd`` plus spatial attention at the last pruned layer of each feature-map scale (maps only)."""
    pairs = [[roots[-1], roots[-1]] for scale, roots in scales.items() if scale != "1x1"]
    terms = [LossTerm(name="kd", temperature=4.0, alpha=0.7)]
    if pairs:
        terms.append(LossTerm(name="spatial-attention", weight=1.0, pairs=pairs))
    return terms


def check_prune(model: nn.Module, example: torch.Tensor, num_classes: int, where: str) -> None:
    """Torch-Pruning's dependency graph over the model (what every pruning method builds first)."""
    try:
        channel_groups(copy.deepcopy(model), example, num_classes)
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises many types on models it cannot trace
        raise preflight_error(where, "prune", f"Torch-Pruning cannot build the model's dependency graph ({first_line(exc, with_type=True)})",
                    "prune a model whose forward torch can trace, or drop the prune stage") from None


@PREFLIGHTS.register("prune")
def preflight_prune(cfg: PruneConfig, preview: Preview, where: str) -> None:
    """The recovery losses' module names (a pruned model keeps the teacher's), the dependency graph; the
    pruned teacher is the student from here on."""
    if cfg.recovery.loss:
        check_loss_names(cfg.recovery.loss, f"{where}.recovery.loss", StudentSpec(width=1.0), preview.teacher,
                         preview.head_width, preview.example.shape[1])
    check_prune(preview.model, preview.example, preview.head_width, where)
    preview.student_made = True
