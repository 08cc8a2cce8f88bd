"""Feature distillation losses (METHODS.md, "Feature distillation"). Modules are named in the recipe."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..models.features import Tap, channel_energy, last_linear, resolve_module
from .base import LOSSES, Batch, DistillTerm, IntermediateHeads, Params, SetupInfo, with_labels


class PairParams(Params):
    pairs: list[tuple[str, str]] = Field(min_length=1, description="[student module, teacher module] pairs")


class _Paired(DistillTerm):
    """Shared by losses that match student features to teacher features module by module."""

    Params = PairParams

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for i, (s, t) in enumerate(self.params.pairs):
            resolve_module(student, s, "the student", f"{self.key}.pairs.{i}.0")
            resolve_module(teacher, t, "the teacher", f"{self.key}.pairs.{i}.1")

    def student_taps(self) -> list[Tap]:
        return [Tap(s) for s, _ in self.params.pairs]

    def teacher_taps(self) -> list[Tap]:
        return [Tap(t) for _, t in self.params.pairs]


@LOSSES.register("hint")
class FitNetsHint(_Paired):
    """FitNets hint: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

    ``MSE(adapter(F_s), F_t)`` with a learned 1×1 conv (maps) or linear (vectors, tokens) adapter from
    the student's channels to the teacher's; the student map is average-pooled to the teacher's size
    when they differ. Adapters live in this loss and are dropped at export.
    """

    def setup(self, info: SetupInfo) -> None:
        adapters = []
        for i, (s, t) in enumerate(self.params.pairs):
            fs, ft = info.student_features[s], info.teacher_features[t]
            if fs.ndim != ft.ndim:
                raise RecipeError(f"{self.key}.pairs.{i}: student feature {tuple(fs.shape)} and teacher feature "
                                  f"{tuple(ft.shape)} have different ranks; pick modules of the same kind")
            adapters.append(nn.Conv2d(fs.shape[1], ft.shape[1], 1) if fs.ndim == 4
                            else nn.Linear(fs.shape[-1], ft.shape[-1]))
        self.adapters = nn.ModuleList(adapters)

    def forward(self, b: Batch) -> torch.Tensor:
        total = b.logits.new_zeros(())
        for adapter, (s, t) in zip(self.adapters, self.params.pairs):
            fs, ft = adapter(b.student_features[s]), b.teacher_features[t]
            if fs.ndim == 4 and fs.shape[-2:] != ft.shape[-2:]:
                fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
            total = total + F.mse_loss(fs, ft)
        return total / len(self.params.pairs)


class AttentionParams(PairParams):
    p: float = Field(2.0, gt=0.0, description="exponent of the attention map mean_c |F|^p")


def attention_map(energy: torch.Tensor) -> torch.Tensor:
    """Spatial attention: a ``channel_energy`` map flattened and L2-normalised per sample."""
    return F.normalize(energy.flatten(1), dim=1)


@LOSSES.register("spatial-attention")
class SpatialAttention(_Paired):
    """Spatial attention transfer: Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR
    2017), as used in "Group channel pruning and spatial attention distilling for object detection".

    ``‖a_s - a_t‖²`` per sample with ``a = normalize(mean_c |F|^p)``; a student map of another size is
    resized to the teacher's. No channel matching, so it is task-agnostic and survives pruning.
    """

    Params = AttentionParams

    def teacher_taps(self) -> list[Tap]:
        return [Tap(t, energy_p=self.params.p) for _, t in self.params.pairs]  # the teacher's map, reduced

    def forward(self, b: Batch) -> torch.Tensor:
        total = b.logits.new_zeros(())
        for s, t in self.params.pairs:
            fs, et = b.student_features[s], b.teacher_features[Tap(t, energy_p=self.params.p).key]
            if fs.ndim == 4 and fs.shape[-2:] != et.shape[-2:]:
                fs = F.interpolate(fs, size=et.shape[-2:], mode="bilinear", align_corners=False)
            es = channel_energy(fs, self.params.p)
            total = total + (attention_map(es) - attention_map(et)).pow(2).sum(1).mean()
        return total / len(self.params.pairs)


class NDParams(Params):
    head: str | None = Field(None, description="the student's classifier; its input is the embedding")
    teacher_head: str | None = Field(None, description="the teacher's classifier; default: its last nn.Linear")


@LOSSES.register("nd")
class NormDirection(DistillTerm):
    """ND loss: Wang et al., "Improving Knowledge Distillation via Regularizing Feature Norm and
    Direction" (2023).

    Per sample ``1 - <e_s, c_y/‖c_y‖> / max(‖e_s‖, ‖e_t‖)``: the student's embedding ``e_s`` (the
    classifier's input, through a learned linear map when widths differ) is pulled toward the direction
    of the teacher's class mean ``c_y`` and rewarded for a large norm. Class means come from the
    teacher's embeddings of the train split, once. Combine with ``kd`` (the paper's KD++).
    """

    Params = NDParams

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.s_head = self.params.head or last_linear(student, "the student", f"{self.key}.head")
        self.t_head = self.params.teacher_head or last_linear(teacher, "the teacher", f"{self.key}.teacher_head")
        resolve_module(student, self.s_head, "the student", f"{self.key}.head")
        resolve_module(teacher, self.t_head, "the teacher", f"{self.key}.teacher_head")

    def student_taps(self) -> list[Tap]:
        return [Tap(self.s_head, "input")]

    def teacher_taps(self) -> list[Tap]:
        return [Tap(self.t_head, "input")]

    def setup(self, info: SetupInfo) -> None:
        if info.train_labels is None or info.teacher_features_all is None:
            raise RecipeError(f"{self.key}: nd needs labelled training data and a teacher (for class means)")
        ds = info.student_features[Tap(self.s_head, "input").key].flatten(1).shape[1]
        embeddings = info.teacher_features_all(Tap(self.t_head, "input")).flatten(1)
        self.project = nn.Identity() if ds == embeddings.shape[1] else nn.Linear(ds, embeddings.shape[1], bias=False)
        sums = torch.zeros(info.num_classes, embeddings.shape[1]).index_add_(0, info.train_labels, embeddings)
        self.register_buffer("directions", F.normalize(sums, dim=1))

    def forward(self, b: Batch) -> torch.Tensor:
        y = with_labels(b, self.key)
        e_s = self.project(b.student_features[Tap(self.s_head, "input").key].flatten(1))
        e_t = b.teacher_features[Tap(self.t_head, "input").key].flatten(1)
        along = (e_s * self.directions[y]).sum(1)
        return (1 - along / torch.maximum(e_s.norm(dim=1), e_t.norm(dim=1)).clamp_min(1e-12)).mean()


class OFAParams(Params):
    stages: list[str] = Field(min_length=1, description="student modules whose output gets a logit-space branch")
    temperature: float = Field(1.0, gt=0.0)
    eps: float = Field(1.0, gt=0.0, description="γ, the exponent that enhances the target class")


@LOSSES.register("ofa")
class OneForAllKD(IntermediateHeads):
    """OFA-KD: Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures in
    Knowledge Distillation" (NeurIPS 2023).

    Intermediate student features (CNN maps or ViT tokens) are projected to logit space by small
    branches, and every branch and the final head are distilled there with the OFA loss
    ``-Σ_c ((p_t,c + 1[c=y])^γ - 1[c=y])·log p_s,c``, so teacher and student families need not share
    feature shapes. Branches live in this loss and are dropped at export.
    """

    Params = OFAParams
    modules_key = "stages"

    def ofa(self, logits: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.params.temperature
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        weight = (F.softmax(teacher / t, dim=1) + target).pow(self.params.eps) - target
        return -(weight.detach() * F.log_softmax(logits / t, dim=1)).sum(1).mean()

    def forward(self, b: Batch) -> torch.Tensor:
        y, teacher = with_labels(b, self.key), b.teacher_logits[0]
        branches = self.head_logits(b)
        total = self.ofa(b.logits, teacher, y)
        for logits in branches:
            total = total + self.ofa(logits, teacher, y)
        return total / (1 + len(branches))
