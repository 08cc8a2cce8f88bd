"""Distillation losses on a detector's output rows (the detection task's contract: per candidate a box in
input pixels and a score per class). Both need the student to share the teacher's candidates (anchors):
a pruned or narrowed copy of the same detector at the same input size, which is what edgekd's prune +
distill recipes make. Feature-level detection distillation (spatial attention on FPN levels) is the
``spatial-attention`` loss with FPN modules named in its pairs.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..errors import RecipeError
from .base import LOSSES, Batch, DistillTerm, Params

BOX = 4


def _rows(b: Batch, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the main teacher's rows, checked to share their candidates."""
    student, teacher = b.logits, b.teacher_logits[0].to(b.logits.dtype)
    if student.ndim != 3 or student.shape != teacher.shape:
        raise RecipeError(f"{key}: the student's rows {tuple(student.shape)} and the teacher's "
                          f"{tuple(teacher.shape)} must match (N, anchors, 4 + classes): distil a pruned or "
                          f"narrower copy of the same detector at the same input size")
    return student, teacher


class ScoreParams(Params):
    eps: float = Field(1e-6, gt=0.0, lt=0.01, description="scores are clamped to [eps, 1 - eps] before logs")


@LOSSES.register("detection-score-kd")
class ScoreMapKD(DistillTerm):
    """Classification-map distillation on the head: the Bernoulli KL divergence from the teacher's class
    scores to the student's at every candidate and class, summed over classes, averaged over candidates
    (Hinton et al.'s soft targets per class, as detectors with sigmoid heads use them; "Learning Efficient
    Object Detection Models with Knowledge Distillation", Chen et al., NeurIPS 2017, distil the
    classification head this way). Zero exactly when the two score maps agree."""

    Params = ScoreParams
    needs_labels = False

    def forward(self, b: Batch) -> torch.Tensor:
        student, teacher = _rows(b, self.key)
        eps = self.params.eps
        s, t = student[..., BOX:].clamp(eps, 1 - eps), teacher[..., BOX:].clamp(eps, 1 - eps)
        kl = t * (t.log() - s.log()) + (1 - t) * ((1 - t).log() - (1 - s).log())
        return kl.sum(-1).mean()


class BoxParams(Params):
    min_score: float = Field(0.3, gt=0.0, lt=1.0, description="candidates whose best teacher score reaches this "
                             "are distilled (the teacher's confident boxes)")
    l1_weight: float = Field(1.0, ge=0.0, description="weight of the L1 distance, in units of the teacher box's "
                             "width + height")
    giou_weight: float = Field(1.0, ge=0.0, description="weight of the GIoU loss")


@LOSSES.register("detection-box-kd")
class BoxRegressionKD(DistillTerm):
    """Box-regression distillation: at the candidates where the teacher is confident, the student's
    decoded box is pulled to the teacher's by L1 (over the teacher box's width + height, so small and large
    objects count alike) and the generalized-IoU loss
    (torchvision's ``generalized_box_iou_loss``; Rezatofighi et al., CVPR 2019), each candidate weighted
    by the teacher's score (Chen et al. 2017 bound the student's regression by the teacher's; here the
    teacher's box is the target directly). Zero when the boxes agree, and when the teacher is confident
    nowhere."""

    Params = BoxParams
    needs_labels = False

    def forward(self, b: Batch) -> torch.Tensor:
        from torchvision.ops import generalized_box_iou_loss

        student, teacher = _rows(b, self.key)
        weight, _ = teacher[..., BOX:].max(-1)
        keep = weight >= self.params.min_score
        if not bool(keep.any()):
            return student.sum() * 0.0  # keeps the graph: a step with no confident teacher box
        s, t, w = student[..., :BOX][keep], teacher[..., :BOX][keep], weight[keep]
        scale = ((t[:, 2] - t[:, 0]) + (t[:, 3] - t[:, 1])).clamp_min(1.0)  # the teacher box's own size
        l1 = (s - t).abs().sum(-1) / scale
        giou = generalized_box_iou_loss(s, t, reduction="none")
        return ((self.params.l1_weight * l1 + self.params.giou_weight * giou) * w).sum() / w.sum()
