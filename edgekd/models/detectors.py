"""torchvision's single-stage detectors (SSD / SSDlite, FCOS, RetinaNet) with the detection task's output
contract: ``Detector(model, size)(x)`` is (N, A, 4 + C), a box per candidate in input pixels and a score
per class (``tasks.detection``).

The forward is torchvision's own backbone and head, then its own box coder on anchors computed once for
the input size (a constant of the exported graph: anchors depend on the size, never on the pixels),
then the family's own score (SSD: softmax without the background column; RetinaNet: sigmoid; FCOS: the
square root of class sigmoid times centre-ness sigmoid). What torchvision does after that (threshold,
per-level top-k, NMS) is data-dependent control flow and stays outside the file (``tasks.detection
.postprocess``). Training uses torchvision's losses unchanged: ``Detector.losses`` calls the model in
train mode with the batch's boxes; only its input transform is replaced, because edgekd's preprocessing
(letterbox, normalisation) already made the input and the boxes are in its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError


@dataclass(frozen=True)
class Family:
    """How a torchvision detector family turns its head into boxes and scores (data, not code paths)."""

    score: str          # "softmax" (class 0 is background), "sigmoid", or "centreness" (FCOS)
    coder: str          # "single": BoxCoder.decode_single on (K, 4); "linear": BoxLinearCoder.decode
    background: bool    # training labels are shifted by one (class 0 is background)


FAMILIES = {
    "SSD": Family("softmax", "single", True),
    "RetinaNet": Family("sigmoid", "single", False),
    "FCOS": Family("centreness", "linear", False),
}


def is_single_stage_detector(model: nn.Module) -> bool:
    """A torchvision SSD, RetinaNet or FCOS (not yet wrapped)."""
    return not isinstance(model, Detector) and any(c.__name__ in FAMILIES for c in type(model).__mro__)


def family_of(model: nn.Module) -> Family:
    for cls in type(model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    raise CheckpointError(f"{type(model).__name__}: not a single-stage torchvision detector edgekd can export "
                          f"(known: {', '.join(FAMILIES)}); two-stage models (Faster R-CNN) end in RoI pooling")


class InputAsIs(nn.Module):
    """Stands in for torchvision's ``GeneralizedRCNNTransform``: the input is used as it is (edgekd's
    preprocessing made it) and detections are returned in its pixels."""

    def forward(self, images: Any, targets: Any = None) -> tuple[Any, Any]:
        from torchvision.models.detection.image_list import ImageList

        x = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        return ImageList(x, [(int(x.shape[-2]), int(x.shape[-1]))] * len(x)), targets

    def postprocess(self, result: Any, image_shapes: Any, original_image_sizes: Any) -> Any:
        return result


class Detector(nn.Module):
    """A torchvision single-stage detector (``model``) for square ``size`` x ``size`` inputs."""

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.family = family_of(model)
        model.transform = InputAsIs()
        self.model, self.size = model, int(size)
        self.register_buffer("anchors", self._anchors(), persistent=False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.model.backbone(x)
        return list(features.values()) if isinstance(features, dict) else [features]

    @torch.no_grad()
    def _anchors(self) -> torch.Tensor:
        from torchvision.models.detection.image_list import ImageList

        was_training = self.model.training
        self.model.eval()
        x = torch.zeros(1, 3, self.size, self.size)
        anchors = self.model.anchor_generator(ImageList(x, [(self.size, self.size)]), self._features(x))[0]
        self.model.train(was_training)
        return anchors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.model.head(self._features(x))
        codes = head["bbox_regression"]
        n, a = codes.shape[0], codes.shape[1]
        anchors = self.anchors.to(codes.dtype)
        if self.family.coder == "linear":
            boxes = self.model.box_coder.decode(codes, anchors.unsqueeze(0).expand(n, a, 4))
        else:
            boxes = self.model.box_coder.decode_single(codes.reshape(-1, 4), anchors.repeat(n, 1)).reshape(n, a, 4)
        boxes = boxes.clamp(0.0, float(self.size))
        logits = head["cls_logits"]
        if self.family.score == "softmax":
            scores = logits.softmax(-1)[..., 1:]
        elif self.family.score == "centreness":
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(head["bbox_ctrness"]))
        else:
            scores = torch.sigmoid(logits)
        return torch.cat([boxes, scores], dim=-1)

    def losses(self, x: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """torchvision's own training losses on a batch whose labels are (N, K, 5) box rows (class -1:
        padding); the model is put in train mode for the call."""
        targets = []
        for r in rows:
            keep = r[:, 0] >= 0
            targets.append({"boxes": r[keep, 1:].to(x.dtype),
                            "labels": r[keep, 0].long() + (1 if self.family.background else 0)})
        was_training = self.model.training
        self.model.train()
        try:
            return self.model(list(x), targets)
        finally:
            self.model.train(was_training)


def is_torchvision_detector_name(name: str) -> bool:
    import torchvision

    return name in torchvision.models.list_models(module=torchvision.models.detection)


def torchvision_detection_model(name: str, num_classes: int | None, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(name)`` with no weights at all (neither the detector's nor its
    backbone's: nothing is downloaded), for ``num_classes`` classes plus the background class SSD counts."""
    import torchvision

    family = next((f for n, f in FAMILIES.items() if n.lower() in name.lower()), None)
    if family is None:
        raise CheckpointError(f"torchvision:{name}: not a single-stage detector edgekd can export (known families: "
                              f"{', '.join(FAMILIES)}; e.g. ssdlite320_mobilenet_v3_large, fcos_resnet50_fpn, "
                              f"retinanet_resnet50_fpn_v2)")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes + (1 if family.background else 0)
    return torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)


def torchvision_detector(name: str, num_classes: int, size: int, **kwargs: Any) -> Detector:
    """``torchvision_detection_model`` wrapped for ``size`` x ``size`` inputs."""
    return Detector(torchvision_detection_model(name, num_classes, **kwargs), size)
