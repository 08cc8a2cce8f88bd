"""Logit distillation losses (METHODS.md, "Logit distillation")."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import RecipeError
from ..models.features import Tap, last_linear, resolve_module
from .base import LOSSES, Batch, DistillTerm, Params, SoftParams, ce_or_zero, mix, soft_kl, with_labels


@LOSSES.register("kd")
class VanillaKD(DistillTerm):
    """Vanilla KD: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015).

    ``(1-α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))``; T² keeps gradients comparable across T.
    """

    Params = SoftParams

    def forward(self, b: Batch) -> torch.Tensor:
        p = self.params
        soft = soft_kl(b.logits, F.softmax(b.teacher_logits[0] / p.temperature, dim=1), p.temperature)
        return mix(p.alpha, ce_or_zero(b.logits, b, p.alpha, self.key), soft)


class LabelFreeParams(Params):
    temperature: float = Field(1.0, gt=0.0)


@LOSSES.register("kd-labelfree")
class LabelFreeKD(DistillTerm):
    """Label-free KD: the student matches only the teacher's probabilities (the SSLD recipe of
    "Beyond Self-Supervision"; MEAL V2), so unlabeled images can be used: ``T²·KL(p_t ‖ p_s)``.
    """

    Params = LabelFreeParams
    needs_labels = False

    def forward(self, b: Batch) -> torch.Tensor:
        t = self.params.temperature
        return soft_kl(b.logits, F.softmax(b.teacher_logits[0] / t, dim=1), t)


class NKDParams(Params):
    temperature: float = Field(1.0, gt=0.0, description="λ, the temperature of the non-target part")
    gamma: float = Field(1.5, ge=0.0, description="weight of the normalized non-target part")
    ce: float = Field(1.0, ge=0.0, description="weight of the plain cross-entropy on the labels")


@LOSSES.register("nkd")
class NormalizedKD(DistillTerm):
    """NKD: Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
    Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023).

    ``ce·CE(s, y) - t_y·log s_y - γ·λ²·Σ_{i≠y} t̂_i log ŝ_i``, where ``t̂``, ``ŝ`` are the non-target
    probabilities at temperature λ renormalised to sum to 1, so the non-target term no longer depends on
    how much mass teacher and student put on the target class.
    """

    Params = NKDParams

    def forward(self, b: Batch) -> torch.Tensor:
        p, y = self.params, with_labels(b, self.key)
        s, t = b.logits, b.teacher_logits[0]
        n, c = s.shape
        target = y.view(-1, 1)
        s_target = torch.gather(F.log_softmax(s, dim=1), 1, target)
        t_target = torch.gather(F.softmax(t, dim=1), 1, target).detach()
        loss_target = -(t_target * s_target).mean()
        keep = torch.ones_like(s, dtype=torch.bool).scatter_(1, target, False)
        s_non = F.log_softmax(s[keep].view(n, c - 1) / p.temperature, dim=1)
        t_non = F.softmax(t[keep].view(n, c - 1) / p.temperature, dim=1)
        loss_non = -p.gamma * p.temperature ** 2 * (t_non * s_non).sum(1).mean()
        return p.ce * F.cross_entropy(s, y) + loss_target + loss_non


class DHKDParams(SoftParams):
    head: str | None = Field(None, description="the student's classifier module; default: its last nn.Linear")
    aux_weight: float = Field(1.0, ge=0.0, description="weight of the auxiliary head's logit-level loss")


@LOSSES.register("dhkd")
class DualHeadKD(DistillTerm):
    """DHKD: Yang et al., "Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an
    Auxiliary Head" (2024).

    A logit-level loss (MSE to the teacher's logits) and a probability-level loss (CE + KD) pull one
    linear head in different directions; DHKD gives the logit-level loss its own auxiliary head on the
    shared embedding. The auxiliary head lives in this loss, not in the student, so export drops it.
    """

    Params = DHKDParams

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.head_name = self.params.head or last_linear(student, "the student", f"{self.key}.head")
        head = resolve_module(student, self.head_name, "the student", f"{self.key}.head")
        if not isinstance(head, nn.Linear):
            raise RecipeError(f"{self.key}.head: {self.head_name!r} is a {type(head).__name__}, not nn.Linear")
        self.aux_head = nn.Linear(head.in_features, head.out_features)

    def student_taps(self) -> list[Tap]:
        return [Tap(self.head_name, "input")]

    def forward(self, b: Batch) -> torch.Tensor:
        p, t = self.params, b.teacher_logits[0]
        main = mix(p.alpha, ce_or_zero(b.logits, b, p.alpha, self.key),
                   soft_kl(b.logits, F.softmax(t / p.temperature, dim=1), p.temperature))
        embedding = b.student_features[Tap(self.head_name, "input").key].flatten(1)
        aux = F.mse_loss(self.aux_head(embedding), t)
        return main + p.aux_weight * aux


class TeacherRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    checkpoint: str
    arch: str | None = None


class MultiTeacherParams(SoftParams):
    teachers: list[TeacherRef] = Field(default_factory=list, description="extra teachers, any architectures")
    include_main: bool = True
    weighting: Literal["average", "confidence"] = "average"


@LOSSES.register("multi-teacher")
class MultiTeacherKD(DistillTerm):
    """Multi-teacher KD: the student learns from the teachers' averaged softmax (MEAL V2; "Knowledge
    Concentration"), or from a per-sample weighting by each teacher's confidence in the true label
    (weights ``softmax_k(-CE(t_k, y))``, as in confidence-aware multi-teacher KD).

    The teachers are the run's teacher (``include_main``) plus ``teachers``; at least two in all.
    """

    Params = MultiTeacherParams

    def __init__(self, params: MultiTeacherParams, key: str) -> None:
        super().__init__(params, key)
        if len(params.teachers) + int(params.include_main) < 2:
            raise RecipeError(f"{key}.teachers: multi-teacher needs at least two teachers in all "
                              f"(the run's teacher counts when include_main is true)")

    def ensemble(self, b: Batch) -> torch.Tensor:
        p = self.params
        logits = b.teacher_logits if p.include_main else b.teacher_logits[1:]
        probs = torch.stack([F.softmax(t / p.temperature, dim=1) for t in logits])  # (K, N, C)
        if p.weighting == "average":
            return probs.mean(0)
        y = with_labels(b, self.key)
        ce = torch.stack([F.cross_entropy(t, y, reduction="none") for t in logits])  # (K, N)
        weights = F.softmax(-ce, dim=0).unsqueeze(-1)
        return (weights * probs).sum(0)

    def forward(self, b: Batch) -> torch.Tensor:
        p = self.params
        return mix(p.alpha, ce_or_zero(b.logits, b, p.alpha, self.key),
                   soft_kl(b.logits, self.ensemble(b), p.temperature))


class TAIDParams(SoftParams):
    temperature: float = Field(1.0, gt=0.0)
    lambda_start: float = Field(0.4, ge=0.0, lt=1.0)
    lambda_end: float = Field(1.0, gt=0.0, le=1.0)
    adapt_rate: float = Field(5e-4, ge=0.0, le=1.0, description="α of the adaptive update")
    momentum: float = Field(0.99, ge=0.0, lt=1.0, description="β of the relative-loss-change momentum")


@LOSSES.register("taid")
class TAID(DistillTerm):
    """TAID: Shing et al., "TAID: Temporally Adaptive Interpolated Distillation for Efficient
    Knowledge Transfer in Language Models" (ICLR 2025).

    Target ``(1-λ)·stopgrad(p_s) + λ·p_t``: early on the target sits near the student, which eases a
    large capacity gap. λ never falls below its linear schedule from ``lambda_start`` to ``lambda_end``
    and moves faster while the loss is falling: ``λ += rate·sigmoid(m)·(1-λ)``, where ``m`` is the
    momentum of the relative loss change. α < 1 adds the ground-truth share as in ``kd``.
    """

    Params = TAIDParams

    def __init__(self, params: TAIDParams, key: str) -> None:
        super().__init__(params, key)
        self.register_buffer("lam", torch.tensor(params.lambda_start, dtype=torch.float64))
        self.register_buffer("trend", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("previous", torch.tensor(float("nan"), dtype=torch.float64))

    def forward(self, b: Batch) -> torch.Tensor:
        p, lam = self.params, float(self.lam)
        t = p.temperature
        target = (1 - lam) * F.softmax(b.logits.detach() / t, dim=1) + lam * F.softmax(b.teacher_logits[0] / t, dim=1)
        return mix(p.alpha, ce_or_zero(b.logits, b, p.alpha, self.key), soft_kl(b.logits, target, t))

    def after_step(self, value: float, b: Batch) -> None:
        p = self.params
        prev = float(self.previous)
        if prev == prev:  # not NaN: there is a previous step
            change = (prev - value) / (abs(prev) + 1e-12)
            self.trend.fill_(p.momentum * float(self.trend) + (1 - p.momentum) * change)
        self.previous.fill_(value)
        lam = float(self.lam)
        adaptive = lam + p.adapt_rate * float(torch.sigmoid(self.trend)) * (1 - lam)
        floor = p.lambda_start + (p.lambda_end - p.lambda_start) * b.progress
        self.lam.fill_(min(p.lambda_end, max(floor, adaptive)))


class BDKDParams(SoftParams):
    gamma: float = Field(2.0, ge=1.0, description="weight given to the favoured divergence on each sample")


@LOSSES.register("bdkd")
class BalancedDivergenceKD(DistillTerm):
    """BD-KD: Amara et al., "BD-KD: Balancing the Divergences for Online Knowledge Distillation" (2022).

    Per sample, forward KL ``KL(p_t‖p_s)`` (mass-covering) and reverse KL ``KL(p_s‖p_t)``
    (mode-seeking) are mixed with weights set by entropy: where the student is less certain than the
    teacher the reverse KL gets ``γ`` (sharpen), else the forward KL does (soften). This balances the
    student's calibration, which matters where an edge device thresholds confidences.
    """

    Params = BDKDParams

    def forward(self, b: Batch) -> torch.Tensor:
        p = self.params
        t = p.temperature
        log_s = F.log_softmax(b.logits / t, dim=1)
        log_t = F.log_softmax(b.teacher_logits[0] / t, dim=1)
        ps, pt = log_s.exp(), log_t.exp()
        forward_kl = (pt * (log_t - log_s)).sum(1)
        reverse_kl = (ps * (log_s - log_t)).sum(1)
        with torch.no_grad():
            student_less_sure = (-(ps * log_s).sum(1)) > (-(pt * log_t).sum(1))
            w_rev = torch.where(student_less_sure, p.gamma, 1.0)
            w_fwd = torch.where(student_less_sure, 1.0, p.gamma)
        soft = t * t * (w_fwd * forward_kl + w_rev * reverse_kl).mean()
        return mix(p.alpha, ce_or_zero(b.logits, b, p.alpha, self.key), soft)
