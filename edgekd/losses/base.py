"""What every distillation loss shares: its inputs (``Batch``), its set-up facts, and its base class.

A loss is a small ``nn.Module`` (``DistillTerm``) because several own trainable parts (adapters,
auxiliary heads, logit-space branches) or state (PS-KD's last-epoch predictions, TAID's λ). Those
parts live in the loss, never in the student, so the exported student carries none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import RecipeError
from ..models.features import Tap, resolve_module
from ..registry import Registry


class Params(BaseModel):
    """A loss's hyper-parameters as written in a recipe (unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SoftParams(Params):
    """Temperature-softened logit matching with a ground-truth share: ``(1-α)·CE + α·(distillation)``."""

    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)


@dataclass
class Batch:
    """One training step's tensors, as every loss sees them."""

    logits: torch.Tensor                       # student logits (N, C)
    labels: torch.Tensor | None                # (N,) or None for unlabeled data
    index: torch.Tensor                        # sample indices into the train split (N,)
    teacher_logits: list[torch.Tensor]         # one (N, C) tensor per teacher; empty without a teacher
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)   # by Tap.key
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)   # main teacher, by Tap.key
    epoch: int = 0                             # 0-based
    epochs: int = 1
    attention_mask: torch.Tensor | None = None  # text: (N, S), 0 for padding tokens; None for images
    input_size: tuple[int, int] | None = None   # images: the batch's (H, W), what box coordinates are in

    @property
    def progress(self) -> float:
        """Fraction of training finished at the start of this epoch, in [0, 1)."""
        return self.epoch / max(1, self.epochs)


@dataclass
class SetupInfo:
    """What a loss may use to build its trainable parts, before the first step."""

    num_classes: int
    n_train: int
    student: nn.Module
    teacher: nn.Module | None
    student_features: dict[str, torch.Tensor]  # a probe batch's features, for shapes
    teacher_features: dict[str, torch.Tensor]
    train_labels: torch.Tensor | None
    teacher_features_all: Callable[[Tap], torch.Tensor] | None = None  # a teacher feature over the train split


class DistillTerm(nn.Module):
    """Base class of every registered loss. Subclasses name their paper in the docstring."""

    Params: ClassVar[type[Params]] = Params
    needs_labels: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = True

    def __init__(self, params: Any, key: str) -> None:
        super().__init__()
        self.params = params
        self.key = key  # where the loss sits in the recipe, for error messages

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Resolve module names against the real models (raise RecipeError on a bad name)."""

    def student_taps(self) -> list[Tap]:
        return []

    def teacher_taps(self) -> list[Tap]:
        return []

    def setup(self, info: SetupInfo) -> None:
        """Build trainable parts from probe shapes; called once, before the optimizer is made."""

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_step(self, value: float, batch: Batch) -> None:
        """Per-step state update (TAID's λ)."""

    def end_epoch(self, distributed: bool) -> None:
        """Per-epoch state update (PS-KD's prediction store)."""


LOSSES: Registry[type[DistillTerm]] = Registry("loss", RecipeError)


class IntermediateHeads(DistillTerm):
    """Base of losses that hang a small classifier (``exit_classifier``) on named student modules.

    ``modules_key`` names the recipe key that lists the modules (``exits``, ``stages``); the heads
    live in ``self.heads``, inside the loss, so export never carries them.
    """

    modules_key: ClassVar[str]

    @property
    def module_names(self) -> list[str]:
        return getattr(self.params, self.modules_key)

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for i, name in enumerate(self.module_names):
            resolve_module(student, name, "the student", f"{self.key}.{self.modules_key}.{i}")

    def student_taps(self) -> list[Tap]:
        return [Tap(n) for n in self.module_names]

    def setup(self, info: SetupInfo) -> None:
        self.heads = nn.ModuleList(exit_classifier(info.student_features[n], info.num_classes,
                                                   f"{self.key}.{self.modules_key}") for n in self.module_names)

    def head_logits(self, b: Batch) -> list[torch.Tensor]:
        return [head(b.student_features[n]) for head, n in zip(self.heads, self.module_names)]


# ---------------------------------------------------------------- shared maths
def soft_kl(student: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T²·KL(target ‖ softmax(s/T))``, batch mean; ``target_probs`` already softened."""
    log_s = F.log_softmax(student / temperature, dim=1)
    kl = (target_probs * (torch.log(target_probs.clamp_min(1e-12)) - log_s)).sum(1)
    return temperature * temperature * kl.mean()


def with_labels(batch: Batch, key: str) -> torch.Tensor:
    if batch.labels is None:
        raise RecipeError(f"{key}: this loss needs labels, but the training data has none; use kd-labelfree")
    return batch.labels


def mix(alpha: float, hard: torch.Tensor | float, soft: torch.Tensor) -> torch.Tensor:
    """``(1-α)·hard + α·soft``; the ground-truth share that "Even your Teacher Needs Guidance" keeps."""
    return (1.0 - alpha) * hard + alpha * soft


def ce_or_zero(logits: torch.Tensor, batch: Batch, alpha: float, key: str) -> torch.Tensor | float:
    """Cross-entropy with the labels when it carries weight (α < 1); no label needed when α = 1."""
    return F.cross_entropy(logits, with_labels(batch, key)) if alpha < 1.0 else 0.0


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) when training under torch.distributed; identity otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def exit_classifier(feature: torch.Tensor, num_classes: int, key: str) -> nn.Module:
    """A small classifier on an intermediate feature (layered self-KD exits, OFA branches): conv-BN-ReLU,
    pool, linear for maps; LayerNorm, token mean, linear for ViT tokens; linear for vectors."""
    if feature.ndim == 4:
        c = feature.shape[1]
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
    if feature.ndim == 3:
        return nn.Sequential(_TokenPool(feature.shape[-1]), nn.Linear(feature.shape[-1], num_classes))
    if feature.ndim == 2:
        return nn.Linear(feature.shape[1], num_classes)
    raise RecipeError(f"{key}: cannot attach a classifier to a feature of shape {tuple(feature.shape)}")


class _TokenPool(nn.Module):
    """(N, tokens, C) -> (N, C): LayerNorm then mean over tokens, for ViT-style features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x).mean(1)
