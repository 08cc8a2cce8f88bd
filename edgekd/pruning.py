"""Structured channel removal through Torch-Pruning's dependency graph (DepGraph).

Used for ``student: {width: w}``: a narrower copy of *any* CNN (edgekd's zoo, torchvision, timm) is
the teacher with ``1-w`` of every prunable layer's channels removed, the coupled layers (BN, residual
adds, concats, depthwise convs) following automatically. The result is described by a *channel plan*
(module name -> output channels), which is all it takes to rebuild the same shapes later from the
original architecture, so a pruned model reloads from safetensors without pickling any code.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import StageError


def _classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are class scores: never pruned (the student keeps the label space)."""
    return [m for m in model.modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.kernel_size == (1, 1))]


def uniform_width(model: nn.Module, example: torch.Tensor, width: float, num_classes: int,
                  keep_weights: bool = True) -> nn.Module:
    """A copy of ``model`` keeping ``width`` of every prunable layer's channels (L1-magnitude choice).

    ``keep_weights=False`` re-initialises every layer afterwards (a narrower architecture, fresh weights).
    """
    import torch_pruning as tp

    student = copy.deepcopy(model).eval()
    for p in student.parameters():  # Torch-Pruning traces through autograd: frozen layers would be skipped
        p.requires_grad_(True)
    if width < 1.0:
        with torch.enable_grad():  # Torch-Pruning traces through autograd, also when called under no_grad
            pruner = tp.pruner.MetaPruner(student, example, importance=tp.importance.MagnitudeImportance(p=1),
                                          pruning_ratio=1.0 - width,
                                          ignored_layers=_classifier_layers(student, num_classes))
        try:
            with torch.enable_grad():
                pruner.step()
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises plain errors on graphs it cannot trace
            raise StageError(f"student.width: Torch-Pruning could not narrow this model "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             f"give the student as 'student: {{arch: ...}}' instead") from None
    if not keep_weights:
        for m in student.modules():
            if hasattr(m, "reset_parameters") and m is not student:
                m.reset_parameters()
    return student


def channel_plan(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer, by module name."""
    return {name: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def apply_channel_plan(model: nn.Module, example: torch.Tensor, plan: dict[str, int]) -> nn.Module:
    """Remove channels from ``model`` (in place) until every layer has the plan's output channels.

    Which channels go does not matter (weights are loaded afterwards); the dependency graph makes the
    coupled layers follow, so the result has exactly the shapes of the model the plan came from.
    """
    import torch_pruning as tp

    for p in model.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():  # the graph is traced through autograd, also when called under no_grad
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    for name, target in plan.items():
        m = modules.get(name)
        if m is None:
            raise StageError(f"channel plan names {name!r}, which the rebuilt model does not have")
        current = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        if current == target:
            continue
        if current < target:
            raise StageError(f"channel plan wants {target} channels in {name!r}, which has only {current}")
        fn = tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels
        dg.get_pruning_group(m, fn, idxs=list(range(target, current))).prune()
    return model
