"""Preflight: before anything trains, run one batch through every transformation a later stage needs.

Distillation can take hours; a model that cannot be traced for quantization, pruned through a
dependency graph or exported to ONNX should fail in seconds, not after it. Each stage in the recipe
gets its check on the model it will see (the teacher, or an ``arch`` student after a distill stage;
a width student is a narrowed copy of the teacher, so the teacher stands in for it). A failure is
the user's input (exit 2), naming the stage, the cause and the remedy.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..models.checkpoint import build_model
from ..config import DistillConfig, PruneConfig, QuantizeConfig, Recipe
from ..errors import EdgekdError, InputError, first_line

TRACE_REMEDY = ("torch.fx cannot follow Python control flow on tensor values or shapes (an `if x.shape ...` "
                "check, a data-dependent loop): remove it from forward, move it into a submodule that is not "
                "quantized, or use mode-free stages (distill, export) only")


def _fail(where: str, stage: str, cause: str, remedy: str) -> InputError:
    return InputError(f"preflight {where} ({stage}): {cause}; {remedy}")


def check_quantize(model: nn.Module, example: torch.Tensor, where: str) -> None:
    """The fx trace and Brevitas layer swap the quantize stage does (given an example input, as the stage
    is: shape-dependent code is traced with its values), then one forward pass."""
    from .quantize.quantization import quantize_model

    try:
        qmodel = quantize_model(model, example=example)
    except EdgekdError as exc:
        raise _fail(where, "quantize", str(exc).removeprefix("quantize: "), TRACE_REMEDY) from None
    try:
        with torch.no_grad():
            qmodel.eval()(example)
    except Exception as exc:  # noqa: BLE001 - any failure here is the model's
        raise _fail(where, "quantize", f"the fake-quantized model fails on one batch ({first_line(exc, with_type=True)})",
                    "check the model's forward on quantized layers") from None


def check_prune(model: nn.Module, example: torch.Tensor, num_classes: int, where: str) -> None:
    """Torch-Pruning's dependency graph over the model (what every pruning method builds first)."""
    from .prune.pruning import channel_groups

    try:
        channel_groups(copy.deepcopy(model), example, num_classes)
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises many types on models it cannot trace
        raise _fail(where, "prune", f"Torch-Pruning cannot build the model's dependency graph ({first_line(exc, with_type=True)})",
                    "prune a model whose forward torch can trace, or drop the prune stage") from None


def check_export(model: nn.Module, example: torch.Tensor, opset: int, where: str) -> None:
    """A throw-away FP32 ONNX export at the recipe's opset."""
    from .export.exporting import export_fp32

    with tempfile.TemporaryDirectory(prefix="edgekd-preflight-") as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_fp32(copy.deepcopy(model), example, Path(tmp) / "m.onnx", opset)
        except Exception as exc:  # noqa: BLE001 - exporters raise many types
            raise _fail(where, "export", f"ONNX export at opset {opset} fails ({first_line(exc, with_type=True)})",
                        "export needs a forward torch.onnx can trace; try another opset or simplify forward") from None


def preflight(recipe: Recipe, teacher: nn.Module, example: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Run every later stage's check; returns seconds per check (for the manifest). ``example``: one
    real preprocessed sample (batch 1; batch 2 where BatchNorm trains)."""
    timings: dict[str, float] = {}
    model = teacher
    in_channels = example.shape[1]
    for i, spec in enumerate(recipe.stages):
        where = f"stages.{i}"
        began = time.perf_counter()
        if isinstance(spec, DistillConfig) and recipe.student.arch is not None:
            torch.manual_seed(recipe.seed)
            model = build_model(recipe.student.arch, num_classes=num_classes, in_channels=in_channels,
                                arch_args=recipe.student.arch_args).eval()
            try:
                with torch.no_grad():
                    model(example)
            except Exception as exc:  # noqa: BLE001
                raise _fail(where, "distill", f"the student {recipe.student.arch} fails on one batch "
                            f"({first_line(exc, with_type=True)})", "check student.arch and student.arch_args") from None
        elif isinstance(spec, PruneConfig):
            check_prune(model, example, num_classes, where)
        elif isinstance(spec, QuantizeConfig):
            check_quantize(model, example, where)
        elif spec.stage == "export":
            check_export(model, example, spec.opset, where)
        timings[f"{where}.{spec.stage}"] = round(time.perf_counter() - began, 3)
    return timings
