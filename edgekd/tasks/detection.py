"""Detection: boxes and class scores, scored by COCO mAP against the data's boxes.

The output contract (every detector edgekd exports, docs/detection.md): one tensor (N, A, 4 + C), per
candidate location a box ``x1, y1, x2, y2`` in the model input's pixels and one score in [0, 1] per class.
The network and its box decoding are in the file; score thresholding, non-maximum suppression and the
top-k cut are not: they run here (``postprocess``), the same function for every runtime's outputs and for
the torch model's. Why: ONNX Runtime and OpenVINO run ONNX ``NonMaxSuppression`` but TensorRT needs its
EfficientNMS plugin, and each keeps ties and thresholds its own way, so "parity" of two files with NMS
inside would partly be parity of three NMS implementations; outside, a file's boxes differ from the
torch model's only by what its network computes. A deployment reproduces the evaluator's boxes exactly
by calling ``postprocess`` with the thresholds the file's metadata records.

mAP@[.5:.95] and mAP@.5 come from faster-coco-eval (pycocotools' C++ evaluation), never from code of
ours: the ground truth and detections are handed over as COCO dicts in input pixels.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError, StageError
from .base import TASKS, Agreement, Task

BOX = 4  # x1, y1, x2, y2 before the class scores


@dataclass(frozen=True)
class NmsSettings:
    """What turns a file's candidate rows into detections (recorded in every exported detector's
    metadata): COCO evaluation's usual low score threshold, IoU threshold per class, at most
    ``max_detections`` per image after at most ``candidates`` rows before NMS."""

    score_threshold: float = 0.001
    iou_threshold: float = 0.6
    max_detections: int = 100
    candidates: int = 1000

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` (M, 4) xyxy, ``scores`` (M,), ``classes`` (M,), best first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def postprocess(outputs: np.ndarray, settings: NmsSettings = NmsSettings()) -> list[Detections]:
    """Each image's detections from its (A, 4 + C) rows: every (row, class) pair scoring above the
    threshold is a candidate (a location may hold objects of two classes), the ``candidates`` best are
    kept, then torchvision's ``batched_nms`` per class and the ``max_detections`` best."""
    import torch
    from torchvision.ops import batched_nms

    out = []
    for rows in np.asarray(outputs, dtype=np.float32):
        scores = rows[:, BOX:]
        anchor, cls = np.nonzero(scores > settings.score_threshold)
        value = scores[anchor, cls]
        best = np.argsort(-value, kind="stable")[: settings.candidates]
        anchor, cls, value = anchor[best], cls[best], value[best]
        boxes = torch.from_numpy(rows[anchor, :BOX].copy())
        keep = batched_nms(boxes, torch.from_numpy(value.copy()), torch.from_numpy(cls), settings.iou_threshold)
        keep = keep[: settings.max_detections].numpy()
        out.append(Detections(rows[anchor[keep], :BOX], value[keep], cls[keep].astype(np.int64)))
    return out


def coco_map(detections: list[Detections], truth: np.ndarray, num_classes: int) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 of ``detections`` against the (N, K, 5) ground-truth rows, by
    faster-coco-eval (every class id 0..C-1 a category; boxes in input pixels)."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise StageError("detection scores need faster-coco-eval: pip install 'edgekd[detection]'") from None
    images, annotations = [], []
    for i, rows in enumerate(np.asarray(truth, dtype=np.float64)):
        images.append({"id": i, "width": 1, "height": 1})
        for cls, x1, y1, x2, y2 in rows[rows[:, 0] >= 0]:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(cls), "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    if not annotations:
        raise DataError("detection: the split holds no boxes; mAP is undefined without ground truth")
    found = [{"image_id": i, "category_id": int(c), "score": float(s), "bbox": [float(b[0]), float(b[1]),
              float(b[2] - b[0]), float(b[3] - b[1])]}
             for i, d in enumerate(detections) for b, s, c in zip(d.boxes, d.scores, d.classes)]
    if not found:
        return {"map": 0.0, "map50": 0.0}
    ground = COCO({"images": images, "annotations": annotations,
                   "categories": [{"id": c, "name": str(c)} for c in range(num_classes)]})
    with redirect_stdout(io.StringIO()):  # summarize() prints its table
        evaluation = COCOeval_faster(ground, ground.loadRes(found), "bbox", print_function=lambda *a, **k: None)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"map": max(0.0, float(stats[0])), "map50": max(0.0, float(stats[1]))}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (M, 4) with every box in ``b`` (K, 4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


PARITY_SCORE = 0.25  # detections a deployment would show: what box parity compares
PARITY_IOU = 0.5


def box_parity(reference: list[Detections], output: list[Detections]) -> dict[str, Any]:
    """How well one file's detections reproduce another's (scores above ``PARITY_SCORE``): each
    reference box matched greedily, best score first, to an unmatched box of the same class with IoU
    at least ``PARITY_IOU``; ``f1`` = 2 x matched / (reference boxes + boxes), with the matched pairs'
    mean IoU and mean |score difference|. None for f1 when neither side has a box to compare."""
    matched, n_ref, n_out, ious, score_diffs = 0, 0, 0, [], []
    for ref, out in zip(reference, output):
        r, o = ref.scores >= PARITY_SCORE, out.scores >= PARITY_SCORE
        rb, rs, rc = ref.boxes[r], ref.scores[r], ref.classes[r]
        ob, os_, oc = out.boxes[o], out.scores[o], out.classes[o]
        n_ref, n_out = n_ref + len(rb), n_out + len(ob)
        if not len(rb) or not len(ob):
            continue
        iou = box_iou(rb, ob) * (rc[:, None] == oc[None, :])
        taken = np.zeros(len(ob), dtype=bool)
        for i in np.argsort(-rs, kind="stable"):
            candidates = np.where(taken, -1.0, iou[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= PARITY_IOU:
                taken[j] = True
                matched += 1
                ious.append(float(iou[i, j]))
                score_diffs.append(abs(float(rs[i] - os_[j])))
    total = n_ref + n_out
    return {"f1": 2.0 * matched / total if total else None, "matched": matched, "reference_boxes": n_ref,
            "boxes": n_out, "matched_iou": float(np.mean(ious)) if ious else None,
            "score_diff": float(np.mean(score_diffs)) if score_diffs else None}


@TASKS.register("detection")
class Detection(Task):
    name: ClassVar[str] = "detection"
    metric: ClassVar[str] = "COCO mAP@[.5:.95]"
    default_loss: ClassVar[str] = "detection-score-kd"
    # losses that fit its rows, and feature attention on named FPN modules (no channel match needed)
    losses: ClassVar[tuple[str, ...] | None] = ("detection-score-kd", "detection-box-kd", "fgd", "spatial-attention")
    outputs_classes: ClassVar[bool] = False
    label_kind: ClassVar[str] = "boxes"
    agreement_floor: ClassVar[str] = "int8_min_box_agreement"
    nms: ClassVar[NmsSettings] = NmsSettings()

    def score(self, outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
        outputs = np.asarray(outputs)
        if outputs.ndim != 3 or outputs.shape[2] <= BOX:
            raise StageError(f"detection scores need (N, A, 4 + classes) outputs; got {outputs.shape}")
        scores = coco_map(postprocess(outputs, self.nms), labels, outputs.shape[2] - BOX)
        return {"accuracy": scores["map"], "detection": scores}

    def output_problem(self, shape: tuple[int, ...], num_classes: int) -> str | None:
        if len(shape) != 3 or shape[2] != BOX + num_classes:
            return (f"the model outputs shape {shape}; a detector edgekd exports ends at (N, anchors, 4 + "
                    f"{num_classes}) rows: a box x1 y1 x2 y2 in input pixels, then one score per class")
        return None

    def head_width(self, output_width: int, num_classes: int) -> int:
        return BOX + num_classes

    def agreement(self, reference: np.ndarray, output: np.ndarray) -> Agreement:
        parity = box_parity(postprocess(reference, self.nms), postprocess(output, self.nms))
        return Agreement(parity["f1"], f"boxes matched (same class, IoU >= {PARITY_IOU}, scores >= "
                                       f"{PARITY_SCORE}), F1 over both sides", parity)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "nms": self.nms.to_json()}
