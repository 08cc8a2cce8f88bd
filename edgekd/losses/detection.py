"""Distillation losses on a detector's output rows (the detection task's contract: per candidate a box in
input pixels and a score per class). Both need the student to share the teacher's candidates (anchors):
a pruned or narrowed copy of the same detector at the same input size, which is what edgekd's prune +
distill recipes make. Feature-level detection distillation: ``fgd`` (focal distillation with the boxes'
masks) and ``spatial-attention``, both on FPN modules named in their pairs.
"""

from __future__ import annotations

from typing import Any

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


class FGDParams(Params):
    pairs: list[tuple[str, str]] = Field(min_length=1, description="[student module, teacher module] pairs: the "
                                         "FPN levels, each a (N, C, H, W) feature map")
    temperature: float = Field(0.5, gt=0.0, description="of the teacher's spatial and channel attention")
    alpha: float = Field(1e-3, ge=0.0, description="weight of the foreground feature loss")
    beta: float = Field(5e-4, ge=0.0, description="weight of the background feature loss")
    gamma: float = Field(5e-4, ge=0.0, description="weight of the attention loss")


def _attention(f: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FGD's spatial (N, H, W) and channel (N, C) attention of a feature map: H·W·softmax(mean_c |F| / T)
    and C·softmax(mean_hw |F| / T)."""
    n, c, h, w = f.shape
    energy = f.abs()
    spatial = h * w * torch.softmax((energy.mean(1) / temperature).view(n, -1), dim=1).view(n, h, w)
    channel = c * torch.softmax(energy.mean((2, 3)) / temperature, dim=1)
    return spatial, channel


def box_masks(rows: torch.Tensor, input_size: tuple[int, int], shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """FGD's masks on an (h, w) feature map from (N, K, 5) box rows in input pixels: the foreground mask,
    and the scale weights, 1 / (the box's area in feature cells) on a box (the smallest box where boxes
    overlap) and 1 / (the background's cell count) elsewhere, so that large and small objects, and the
    background, each weigh alike."""
    n = rows.shape[0]
    h, w = shape
    sy, sx = h / input_size[0], w / input_size[1]
    scale = torch.zeros(n, h, w, device=rows.device)
    ys = torch.arange(h, device=rows.device).view(h, 1) + 0.5
    xs = torch.arange(w, device=rows.device).view(1, w) + 0.5
    for i in range(n):
        for cls, x1, y1, x2, y2 in rows[i][rows[i, :, 0] >= 0].tolist():
            inside = (xs >= x1 * sx) & (xs <= x2 * sx) & (ys >= y1 * sy) & (ys <= y2 * sy)
            if not bool(inside.any()):  # a box smaller than a cell: its nearest cell
                inside = torch.zeros(h, w, dtype=torch.bool, device=rows.device)
                inside[min(h - 1, int((y1 + y2) / 2 * sy)), min(w - 1, int((x1 + x2) / 2 * sx))] = True
            weight = 1.0 / float(inside.sum())
            scale[i] = torch.where(inside, torch.maximum(scale[i], torch.full_like(scale[i], weight)), scale[i])
    foreground = scale > 0
    background = (~foreground).float()
    background = background / background.sum((1, 2), keepdim=True).clamp_min(1.0)
    return foreground.float(), scale + background


@LOSSES.register("fgd")
class FocalGlobalKD(DistillTerm):
    """Focal distillation of FGD (Yang et al., "Focal and Global Knowledge Distillation for Detectors",
    CVPR 2022) on named FPN levels: the feature difference ``(F_t - adapt(F_s))²`` weighted by the
    teacher's spatial x channel attention and by the boxes' scale masks, foreground (``alpha``) and
    background (``beta``) apart, plus the L1 distance of the two models' attention maps (``gamma``). A
    1x1 adapter, part of the loss, matches the student's channels to the teacher's. FGD's global
    (GcBlock relation) term is left out. Needs the batch's boxes; zero for identical features."""

    Params = FGDParams
    needs_labels = True

    def bind(self, student: torch.nn.Module, teacher: torch.nn.Module | None) -> None:
        from ..models.features import resolve_module

        for i, (s, t) in enumerate(self.params.pairs):
            resolve_module(student, s, "the student", f"{self.key}.pairs.{i}.0")
            resolve_module(teacher, t, "the teacher", f"{self.key}.pairs.{i}.1")

    def student_taps(self) -> list:
        from ..models.features import Tap

        return [Tap(s) for s, _ in self.params.pairs]

    def teacher_taps(self) -> list:
        from ..models.features import Tap

        return [Tap(t) for _, t in self.params.pairs]

    def setup(self, info: Any) -> None:
        from torch import nn

        adapters = []
        for s, t in self.params.pairs:
            cs, ct = info.student_features[s].shape[1], info.teacher_features[t].shape[1]
            adapters.append(nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1))
        self.adapters = nn.ModuleList(adapters)

    def forward(self, b: Batch) -> torch.Tensor:
        if b.labels is None or b.labels.dim() != 3 or b.input_size is None:
            raise RecipeError(f"{self.key}: fgd needs a detection batch (box rows and the input size)")
        p = self.params
        total = b.student_features[p.pairs[0][0]].new_zeros(())
        for (s, t), adapt in zip(p.pairs, self.adapters):
            fs, ft = adapt(b.student_features[s]), b.teacher_features[t].to(b.student_features[s].dtype)
            if fs.shape[-2:] != ft.shape[-2:]:
                fs = torch.nn.functional.interpolate(fs, size=ft.shape[-2:], mode="bilinear", align_corners=False)
            foreground, scale = box_masks(b.labels, b.input_size, tuple(ft.shape[-2:]))
            spatial_t, channel_t = _attention(ft, p.temperature)
            spatial_s, channel_s = _attention(fs, p.temperature)
            weight = (spatial_t * scale).unsqueeze(1) * channel_t.view(*channel_t.shape, 1, 1)
            diff = (ft - fs).pow(2) * weight
            fg = (diff * foreground.unsqueeze(1)).sum() / len(fs)
            bg = (diff * (1 - foreground).unsqueeze(1)).sum() / len(fs)
            attention = ((spatial_t - spatial_s).abs().sum() + (channel_t - channel_s).abs().sum()) / len(fs)
            total = total + p.alpha * fg + p.beta * bg + p.gamma * attention
        return total
