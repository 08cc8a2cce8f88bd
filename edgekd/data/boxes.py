"""Ground-truth boxes: one image's boxes and classes, checked where they are read, moved with the image
through the preprocessing's geometry, and packed into the one tensor a detection batch carries.

A detection split's labels are an (N, K, 5) float32 array: per image up to K rows of
``(class, x1, y1, x2, y2)`` in the model input's pixels, class -1 on padding rows. One fixed-size tensor
per batch keeps every seam that moves labels (loaders, devices, DDP, the teacher-output cache, the
scoring) as it is for classification; K is the most boxes any image of the run has.

The geometry is torchvision's (``transforms.v2.functional`` on ``tv_tensors.BoundingBoxes``) with the
same sizes and offsets the image itself is resized, cropped or padded with (``Preprocess.geometry``),
so a box lands exactly where its pixels do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError

EDGE_SLACK_PX = 1.0  # a box this far past the image's edge is rounding (clipped); further is an error
PAD_CLASS = -1


@dataclass(frozen=True)
class ImageBoxes:
    """One image's ground truth: ``boxes`` (K, 4) float32 ``x1, y1, x2, y2`` in the image's own pixels,
    ``classes`` (K,) int64 in 0..C-1. K may be 0: an image with nothing in it is a valid sample."""

    boxes: np.ndarray
    classes: np.ndarray

    @staticmethod
    def of(rows: list[tuple[float, float, float, float]], classes: list[int]) -> "ImageBoxes":
        return ImageBoxes(np.asarray(rows, dtype=np.float32).reshape(-1, 4), np.asarray(classes, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.classes)


def checked_box(x1: float, y1: float, x2: float, y2: float, size: tuple[int, int], where: str) -> tuple[float, ...]:
    """The box clipped to an image of ``size`` (height, width), or a DataError naming ``where`` (a file
    and line, or an annotation): not finite, zero or negative area, or more than ``EDGE_SLACK_PX``
    outside the image."""
    height, width = size
    values = (x1, y1, x2, y2)
    if not all(np.isfinite(v) for v in values):
        raise DataError(f"{where}: box {_fmt(values)} has a value that is not a finite number")
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: box {_fmt(values)} has zero or negative area (width {x2 - x1:g}, "
                        f"height {y2 - y1:g} pixels); remove it or fix its size")
    s = EDGE_SLACK_PX
    if x1 < -s or y1 < -s or x2 > width + s or y2 > height + s:
        raise DataError(f"{where}: box {_fmt(values)} (x1, y1, x2, y2 in pixels) lies outside the "
                        f"{width}x{height} image")
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def checked_class(value: Any, num_classes: int, where: str, names: str) -> int:
    """A class id as an int in 0..num_classes-1, or a DataError naming ``where`` and the valid ids."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: class {value!r} is not a number; give a class id 0..{num_classes - 1} "
                        f"({names})") from None
    if not np.isfinite(number) or number != int(number) or not 0 <= int(number) < num_classes:
        raise DataError(f"{where}: unknown class id {value!r}; valid ids are 0..{num_classes - 1} ({names})")
    return int(number)


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def pack(per_image: list[ImageBoxes], k: int) -> np.ndarray:
    """Images' boxes as the (N, K, 5) label array (module docstring)."""
    out = np.zeros((len(per_image), k, 5), dtype=np.float32)
    out[:, :, 0] = PAD_CLASS
    for i, truth in enumerate(per_image):
        n = len(truth)
        if n > k:
            raise ValueError(f"image {i} has {n} boxes, more than the {k} rows packed")
        out[i, :n, 0] = truth.classes
        out[i, :n, 1:] = truth.boxes
    return out


def unpack(rows: np.ndarray | torch.Tensor) -> ImageBoxes:
    """One image's rows of the label array back to its boxes, padding dropped."""
    r = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    keep = r[:, 0] >= 0
    return ImageBoxes(r[keep, 1:].astype(np.float32), r[keep, 0].astype(np.int64))


def move_boxes(truth: ImageBoxes, size: tuple[int, int], geometry: list[tuple[str, Any]]) -> ImageBoxes:
    """``truth`` (in an image of ``size`` = (height, width)) through ``geometry``, the resize/crop/pad
    steps the image goes through (``Preprocess.geometry``), with torchvision's own box functions; boxes
    a crop leaves less than a pixel wide or high are dropped (their object is no longer in the input)."""
    if not geometry or not len(truth):
        return truth
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    boxes = tv_tensors.BoundingBoxes(torch.from_numpy(truth.boxes.copy()), format="XYXY", canvas_size=size)
    for op, args in geometry:
        if op == "resize":
            boxes = TF.resize(boxes, list(args))
        elif op == "crop":
            top, left, h, w = args
            boxes = TF.crop(boxes, top, left, h, w)
        elif op == "pad":
            boxes = TF.pad(boxes, list(args))
        elif op == "hflip":
            boxes = TF.horizontal_flip(boxes)
        else:
            raise ValueError(f"unknown geometry step {op!r}")
    boxes = TF.clamp_bounding_boxes(boxes)
    xyxy = boxes.as_subclass(torch.Tensor).numpy()
    keep = ((xyxy[:, 2] - xyxy[:, 0]) >= 1.0) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1.0)
    return ImageBoxes(xyxy[keep].astype(np.float32), truth.classes[keep])


def augment_detection_batch(x: torch.Tensor, rows: torch.Tensor, spec: Any, gen: torch.Generator,
                            fill: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training augmentation of a detection batch: per image a random-resized crop (zoom), a shift
    and a horizontal flip as ``spec`` (``Augment``) asks, drawn from ``gen`` like ``augment_batch``'s,
    as one list of geometry steps for the pixels (``transforms.apply_geometry``) and the boxes
    (``move_boxes``); a box the crop or shift leaves less than a pixel of is dropped. ``fill``: per
    channel, what black is after normalisation (0 for unnormalised data)."""
    from .transforms import _crop_box, apply_geometry

    n, c, h, w = x.shape
    fill = torch.zeros(c) if fill is None else fill
    images, packed = [], torch.full_like(rows, 0.0)
    packed[:, :, 0] = PAD_CLASS
    for i in range(n):
        steps: list[tuple[str, Any]] = []
        if spec.crop_scale is not None:
            top, left, ch, cw = _crop_box(h, w, spec.crop_scale, spec.crop_ratio, gen)
            steps += [("crop", (top, left, ch, cw)), ("resize", (h, w))]
        if spec.shift > 0:
            s = spec.shift
            dy, dx = (int(v) for v in torch.randint(0, 2 * s + 1, (2,), generator=gen))
            steps += [("pad", (s, s, s, s)), ("crop", (dy, dx, h, w))]
        if spec.hflip and bool(torch.rand(1, generator=gen) < 0.5):
            steps.append(("hflip", ()))
        images.append(apply_geometry(x[i], steps, "bilinear", fill))
        moved = move_boxes(unpack(rows[i]), (h, w), steps)
        packed[i, :len(moved), 0] = torch.from_numpy(moved.classes.astype(np.float32))
        packed[i, :len(moved), 1:] = torch.from_numpy(moved.boxes)
    return torch.stack(images), packed
