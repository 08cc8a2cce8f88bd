"""The quantize stage: W8A8 through Brevitas, by calibration (``ptq``) or by training (``qat``).

``qat`` with ``teacher: true`` is quantized distillation (Polino, Pascanu, Alistarh): the
fake-quantized student trains against the full-precision teacher's logits with straight-through
gradients to full-precision shadow weights. Calibration always runs first, so QAT starts from
sensible activation scales.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from ...artifacts.artifact import Artifact, config_hash, save_torch
from .config import LayerOverride, QuantizeConfig
from ..layer_patterns import match_layers
from ...errors import EdgekdError, RecipeError, StageError, first_line
from ...progress import console
from .quantization import (FLOAT_PATH_TOLERANCE, QuantSpec, calibrate, float_path_difference, layer_names,
                           quantize_model, weight_range)
from ...train.evaluate import accuracy
from ..base import (PREFLIGHTS, RESOLVERS, STAGES, Preview, StageContext, TargetFacts, current, preflight_error,
                    role_of)
from .mixed_precision import search


@RESOLVERS.register("quantize")
def resolve_quantize(spec: QuantizeConfig, targets: list[TargetFacts], where: str) -> QuantizeConfig:
    """Settle ``hardswish: auto`` (split only when every target runs the split form fastest: the split form
    costs OpenVINO what it gains ONNX Runtime) and ``input_quant: auto`` (signed where a target's INT8
    takes only signed inputs: a UINT8 graph input would not build on TensorRT)."""
    if spec.hardswish == "auto":
        split = bool(targets) and all(t.hardswish == "split" for t in targets)
        spec = spec.model_copy(update={"hardswish": "split" if split else "fused"})
    signed = [t for t in targets if t.int8_input == "signed"]
    if signed and spec.input_quant == "unsigned":
        raise RecipeError(f"{where}.input_quant: 'unsigned' cannot run on {signed[0].backend} (target "
                          f"{signed[0].name}): its INT8 takes only signed inputs; use auto or signed")
    if signed and spec.input_quant == "auto":
        console.print(f"quantize: signed INT8 graph input, for target(s) {', '.join(t.name for t in signed)}")
        spec = spec.model_copy(update={"input_quant": "signed"})
    return spec


@STAGES.register("quantize")
def quantize(variants: dict[str, Artifact], cfg: QuantizeConfig, ctx: StageContext) -> list[Artifact]:
    source = current(variants)
    splits = ctx.splits
    calibration = splits.calibration_loader(cfg.calibration_batches)
    low = min(float(x.min()) for x, _, _ in calibration)
    if cfg.input_quant == "unsigned" and low < 0:
        raise RecipeError(f"{ctx.stage_key_path}.input_quant: 'unsigned' but the data has negative values "
                          f"(min {low:.3g}); use auto or signed")
    unsigned_input = cfg.input_quant == "unsigned" or (cfg.input_quant == "auto" and low >= 0)
    spec = stage_spec(cfg, unsigned_input)
    float_model = ctx.model(variants, source.variant)
    layers = layer_names(float_model)
    overrides = resolve_overrides(cfg.overrides, layers, ctx.stage_key_path)
    calibrated = _calibrator(float_model, spec, calibration, cfg, ctx)
    float_val = accuracy(float_model, splits, "val")
    mixed = None
    if cfg.max_accuracy_drop is not None:
        mixed = search(layers, overrides, cfg.max_accuracy_drop,
                       lambda chosen: float_val - accuracy(calibrated(chosen), splits, "val"),
                       f"{ctx.stage_key_path}.max_accuracy_drop")
        overrides = mixed.overrides
        console.print(f"mixed precision: {len(mixed.float_layers)} layer(s) kept in float "
                      f"({', '.join(mixed.float_layers) or 'none'}); validation drop {mixed.achieved_drop:.4f} "
                      f"<= {cfg.max_accuracy_drop}")
    qmodel = calibrated(overrides)
    history: list = []
    if cfg.mode == "qat" and cfg.epochs > 0:
        objective, outputs = ctx.objective(cfg.loss, f"{ctx.stage_key_path}.loss", qmodel, teacher=cfg.teacher)
        history = ctx.train(qmodel, objective, outputs, cfg.train_spec(), label="quantize (QAT)").history
    variant = f"{role_of(source.variant)}-int8"
    ctx.models[variant] = qmodel
    val = _checked_val_accuracy(qmodel, float_val, cfg, ctx)
    metrics = {"test_accuracy_torch": accuracy(qmodel, splits, "test"),
               "val_accuracy": val, "float_val_accuracy": float_val, "history": history,
               "mixed_precision": mixed.to_json() if mixed is not None else None,
               **{k: v for k, v in source.meta.get("metrics", {}).items() if k in ("params", "macs")}}
    meta = {"arch": source.meta.get("arch", ""), "arch_kwargs": source.meta.get("arch_kwargs", {}),
            "metrics": metrics, "quantization": _settings(cfg, replace(spec, overrides=overrides), qmodel)}
    return [save_torch(qmodel, ctx.stage_dir / variant, Artifact(
        variant, "torch-int8", "int8", "", "quantize", source.variant, config_hash(cfg.model_dump(), source.config_hash),
        meta))]


def _calibrator(float_model: nn.Module, spec: QuantSpec, calibration: Any, cfg: QuantizeConfig,
                ctx: StageContext) -> Callable[[dict[str, int | None]], nn.Module]:
    """``overrides -> the calibrated fake-quant model``, remembering the last one made (the mixed-precision
    search's final choice is then not calibrated twice)."""
    built: dict[str, nn.Module] = {}

    def calibrated(chosen: dict[str, int | None]) -> nn.Module:
        key = json.dumps(chosen, sort_keys=True)
        if key in built:
            return built[key]
        model = quantize_model(float_model, replace(spec, overrides=chosen), example=ctx.splits.example(1, "test"))
        if getattr(model, "quant_mode", "graph") != "layerwise":  # graph modes and parts: activations mapped
            batch = next(iter(calibration))
            first = (batch[0] if isinstance(batch, (tuple, list)) else batch)[:4].cpu()
            drift = float_path_difference(float_model, model, first)
            if drift > FLOAT_PATH_TOLERANCE:  # calibration would measure ranges of another network
                raise StageError(f"{ctx.stage_key_path}: with quantization off, the quantized model's outputs differ "
                                 f"from the float model's by {drift:.3g} of their range (> {FLOAT_PATH_TOLERANCE}); "
                                 "calibration would measure the wrong ranges. An activation Brevitas maps without "
                                 "its float form: please report the model")
        calibrate(model.to(ctx.device.torch_device), calibration, bias_correction=cfg.bias_correction)
        model.to("cpu")
        built.clear()
        built[key] = model
        return model

    return calibrated


def _checked_val_accuracy(qmodel: nn.Module, float_val: float, cfg: QuantizeConfig, ctx: StageContext) -> float:
    """The INT8 model's validation score, refusing (saving nothing) a model with NaN/Inf tensors or one
    more than ``fail_drop`` / ``max_accuracy_drop`` below the float model."""
    nonfinite = [n for n, t in [*qmodel.named_parameters(), *qmodel.named_buffers()] if not torch.isfinite(t).all()]
    if nonfinite:  # a NaN observer range or scale makes every later number meaningless
        raise StageError(f"{ctx.stage_key_path}: after {cfg.mode} {nonfinite[0]} holds NaN/Inf "
                         f"({len(nonfinite)} tensor(s) in all); check the calibration data and the learning rate")
    val = accuracy(qmodel, ctx.splits, "val")
    if cfg.fail_drop is not None and float_val - val > cfg.fail_drop:
        raise StageError(f"{ctx.stage_key_path}.fail_drop: after {cfg.mode} the INT8 model's validation accuracy is "
                         f"{val:.4f}, {float_val - val:.4f} below the float model's {float_val:.4f} (more than "
                         f"{cfg.fail_drop}); not saving it. Lower lr, calibrate on more batches, or keep layers in "
                         f"float (overrides, max_accuracy_drop)")
    if cfg.max_accuracy_drop is not None and float_val - val > cfg.max_accuracy_drop:
        raise StageError(f"{ctx.stage_key_path}.max_accuracy_drop: after {cfg.mode} the validation drop is "
                         f"{float_val - val:.4f} > {cfg.max_accuracy_drop}; not saving a model that misses it")
    return val


def _settings(cfg: QuantizeConfig, spec: QuantSpec, qmodel: nn.Module) -> dict[str, Any]:
    """What the artifact records of its quantization: the report's line, and ``rebuild_int8``'s recipe."""
    lo, hi = weight_range(cfg.weight_bits, cfg.reduce_range)
    return {"weights": f"int{cfg.weight_bits} per-channel symmetric [{lo},{hi}]", "weight_bits": cfg.weight_bits,
            "activations": "int8 per-tensor", "mode": cfg.mode, "unsigned_input": spec.unsigned_input,
            "reduce_range": cfg.reduce_range, "calibration": cfg.calibration, "percentile": cfg.percentile,
            "bias_correction": cfg.bias_correction, "teacher": cfg.teacher, "overrides": spec.overrides,
            "learned_scales": cfg.learned_scales, "hardswish": cfg.hardswish, "embedding_bits": spec.embedding_bits,
            "quant_mode": getattr(qmodel, "quant_mode", "graph"),
            # layers no INT8 form could be found for (name -> why); named in the report
            "float_layers": getattr(qmodel, "kept_float", {})}


def resolve_overrides(rules: list[LayerOverride], layers: list[str], key: str) -> dict[str, int | None]:
    """Layer name -> weight bits (or None: float) for every layer a rule matches; first match wins.

    A rule that matches no layer is an error naming the layers, so a typo never silently quantizes
    the layer the user meant to protect.
    """
    aliases = {"@first": layers[:1], "@last": layers[-1:]}
    chosen: dict[str, int | None] = {}
    for i, rule in enumerate(rules):
        for name in match_layers(rule.match, layers, f"{key}.overrides.{i}.match", aliases):
            chosen.setdefault(name, None if rule.float else rule.weight_bits)
    return chosen


TRACE_REMEDY = ("torch.fx cannot follow Python control flow on tensor values or shapes (an `if x.shape ...` "
                "check, a data-dependent loop): remove it from forward, move it into a submodule that is not "
                "quantized, or use mode-free stages (distill, export) only")


def stage_spec(cfg: QuantizeConfig, unsigned_input: bool) -> QuantSpec:
    """How the stage quantizes, from its keys (overrides are resolved against the model's layers apart)."""
    return QuantSpec(unsigned_input, cfg.reduce_range, cfg.calibration, cfg.percentile, cfg.weight_bits, None,
                     cfg.learned_scales, cfg.hardswish, 8 if cfg.embeddings == "int8" else None)


def check_quantize(model: nn.Module, example: torch.Tensor, where: str, spec: QuantSpec = QuantSpec()) -> None:
    """The fx trace and Brevitas layer swap the quantize stage does, as ``spec`` says (given an example
    input, as the stage is: shape-dependent code is traced with its values), then one forward pass."""
    try:
        qmodel = quantize_model(model, spec, example=example)
    except EdgekdError as exc:
        raise preflight_error(where, "quantize", str(exc).removeprefix("quantize: "), TRACE_REMEDY) from None
    try:
        with torch.no_grad():
            qmodel.eval()(example)
    except Exception as exc:  # noqa: BLE001 - any failure here is the model's
        raise preflight_error(where, "quantize", f"the fake-quantized model fails on one batch ({first_line(exc, with_type=True)})",
                    "check the model's forward on quantized layers") from None


@PREFLIGHTS.register("quantize")
def preflight_quantize(cfg: QuantizeConfig, preview: Preview, where: str) -> None:
    """The stage's own quantization on one sample: its overrides resolved against the model's layers (a
    rule naming no layer fails now, not after the stages before it trained), its weight bits, calibration,
    Hardswish form and input type."""
    overrides = resolve_overrides(cfg.overrides, layer_names(preview.model), where)
    unsigned = cfg.input_quant == "unsigned" or (cfg.input_quant == "auto" and float(preview.example.min()) >= 0)
    check_quantize(preview.model, preview.example, where, replace(stage_spec(cfg, unsigned), overrides=overrides))
