"""The student a stage's losses will meet, and its module names checked against the loss terms before
anything trains (distill's losses, and prune's recovery losses)."""

from __future__ import annotations

import torch

from ..config.schema import LossTerm, StudentSpec
from ..models.checkpoint import build_model
from ..train.objective import bind_terms


def kept_layers(spec: StudentSpec, depth: int) -> list[int]:
    """The teacher layers a ``layers`` student keeps: every other one from the first, or those listed.
    For ``measured`` the first ``measured_depth`` stand in before the choice (``layer_choice``): every
    subset of one size gives the student the same module names, which is what checks look at."""
    if spec.layers == "measured":
        return list(range(measured_depth(spec, depth)))
    return list(range(0, depth, 2)) if spec.layers == "alternate" else list(spec.layers or [])


def measured_depth(spec: StudentSpec, depth: int) -> int:
    """How many layers a ``measured`` student keeps: ``depth`` given, else half the teacher's, rounded up."""
    return min(spec.depth or (depth + 1) // 2, depth)


def check_loss_names(terms: list[LossTerm], key: str, recipe_student: StudentSpec, teacher: torch.nn.Module,
                     num_classes: int, in_channels: int) -> None:
    """Resolve every module name a stage's losses use, before any stage runs.

    A width (or pruned) student has the teacher's module names (pruning keeps names), so the teacher
    stands in for it; an arch or layer-dropped student is built (cheap) and checked.
    """
    if recipe_student.layers is not None:  # a layer-dropped text student: fewer blocks than the teacher
        from ..models.text import drop_layers, encoder_layers

        student = drop_layers(teacher, kept_layers(recipe_student, len(encoder_layers(teacher)[1])))
    else:
        student = teacher if recipe_student.arch is None else build_model(
            recipe_student.arch, num_classes=num_classes, in_channels=in_channels, arch_args=recipe_student.arch_args)
    bind_terms(terms, key, student, teacher)
