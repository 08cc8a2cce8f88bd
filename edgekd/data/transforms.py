"""Preprocessing as data: what turns a source's raw sample into the tensor a model sees.

The settings (size, crop, interpolation, mean/std, channels) are resolved once per run, from the
recipe where it says, else from the architecture (timm's pretrained config, torchvision weights'
transforms), else from the source, and recorded with every artifact (the manifest, each ONNX file's
metadata), so a deployment can reproduce exactly the tensors the backends were evaluated on.
Training-time augmentation is applied per batch in the training loop (``augment_batch``), from the
run's seeded generator, so a run repeats exactly whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config.schema import Augment, PreprocessSpec
from ..errors import DataError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


LETTERBOX_FILL = 114 / 255  # the gray Ultralytics letterboxes with, in [0, 1] before normalising


@dataclass(frozen=True)
class Preprocess:
    """Resolved preprocessing: resize the shorter side to ``resize`` (or the whole image to ``size``
    when ``resize`` is None), centre-crop ``size``, scale to [0, 1], set ``channels``, normalise. With
    ``letterbox``, the longer side is scaled to ``size`` and the rest padded with ``LETTERBOX_FILL``
    instead (detection: nothing is cropped away and boxes keep their shape)."""

    size: int | None                 # output height = width; None keeps the source's size
    resize: int | None               # shorter side before the crop; None: resize straight to size
    interpolation: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    channels: int | None             # 1 or 3; None keeps the source's
    origin: dict[str, str]           # key -> where the value came from: recipe, architecture or source
    letterbox: bool | None = None    # True: fit the longer side and pad (None: off, and not written out)

    def to_json(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.letterbox:  # off: absent, so records (and stage keys) of classification runs are unchanged
            out.pop("letterbox")
        return out

    def recipe_keys(self) -> dict[str, Any] | str:
        """These values as a recipe's ``data.preprocess`` (what ``recipe.resolved.yaml`` records, so the
        file reruns exactly this); ``"none"`` when nothing resizes, converts or normalises."""
        keys = {k: v for k, v in self.to_json().items() if k not in ("origin", "interpolation") and v is not None}
        if keys.get("size") is not None and self.interpolation:
            keys["interpolation"] = self.interpolation
        return keys or "none"

    def summary(self) -> str:
        """One line of what the samples go through and where each value came from."""
        if self.recipe_keys() == "none":
            return "preprocess: none (the samples' own size and values, no normalisation)"
        said = {k: f"{k} {v}" for k, v in self.recipe_keys().items()}
        return "preprocess: " + ", ".join(f"{text} ({self.origin.get(k, 'default')})" for k, text in said.items())

    def deployment_json(self) -> dict[str, Any]:
        """What an exported file records of its preprocessing (``to_json``: nothing here names this machine)."""
        return {**self.to_json(), **({"letterbox_fill": LETTERBOX_FILL} if self.letterbox else {})}

    def __call__(self, raw: Any) -> torch.Tensor:
        """A raw sample (a PIL image, or a float CHW tensor in [0, 1]) -> the model's input tensor."""
        x = raw if isinstance(raw, torch.Tensor) else _pil_to_tensor(raw)
        x = x.to(torch.float32)
        if x.ndim == 2:
            x = x.unsqueeze(0)
        if x.ndim != 3:
            raise DataError(f"data: a sample has shape {tuple(x.shape)}; expected (C, H, W) or (H, W)")
        x = self._geometry(x)
        x = self._channels(x)
        if self.mean is not None and self.std is not None:
            if len(self.mean) not in (1, x.shape[0]):
                raise DataError(f"data.preprocess: mean/std have {len(self.mean)} values, the samples "
                                f"{x.shape[0]} channel(s); set preprocess.channels or give one value per channel")
            mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    def geometry(self, height: int, width: int) -> list[tuple[str, tuple[int, ...]]]:
        """The steps an image of ``height`` x ``width`` goes through: ``("resize", (h, w))``, ``("crop",
        (top, left, h, w))``, ``("pad", (left, top, right, bottom))``. One list for the pixels and for
        their boxes (``boxes.move_boxes``), so the two cannot disagree."""
        s = self.size
        if s is None:
            return []
        if self.letterbox:
            scale = s / max(height, width)
            nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
            top, left = (s - nh) // 2, (s - nw) // 2
            steps = [("resize", (nh, nw))] if (nh, nw) != (height, width) else []
            return steps + ([("pad", (left, top, s - nw - left, s - nh - top))] if (nh, nw) != (s, s) else [])
        if self.resize is None:
            return [("resize", (s, s))] if (height, width) != (s, s) else []
        scale = self.resize / min(height, width)
        nh, nw = max(s, round(height * scale)), max(s, round(width * scale))
        steps = [("resize", (nh, nw))] if (nh, nw) != (height, width) else []
        return steps + ([("crop", ((nh - s) // 2, (nw - s) // 2, s, s))] if (nh, nw) != (s, s) else [])

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        return apply_geometry(x, self.geometry(*x.shape[-2:]), self.interpolation, torch.tensor([LETTERBOX_FILL]))

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None or x.shape[0] == self.channels:
            return x
        if x.shape[0] == 1:
            return x.expand(self.channels, -1, -1)
        if x.shape[0] == 3 and self.channels == 1:
            return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
        raise DataError(f"data: samples have {x.shape[0]} channels; preprocess.channels={self.channels} cannot "
                        f"be made from them (1 <-> 3 only)")


def apply_geometry(x: torch.Tensor, steps: list[tuple[str, tuple[int, ...]]], mode: str,
                   fill: torch.Tensor) -> torch.Tensor:
    """One (C, H, W) image through ``steps`` (``Preprocess.geometry``'s vocabulary, plus ``("hflip", ())``);
    padding takes ``fill`` per channel (one value for all, or one each). ``boxes.move_boxes`` moves boxes
    through the same steps."""
    # antialias when shrinking, as torchvision's Resize does: a large photo resized without it is
    # not the image the architecture's own preprocessing would have produced
    kw = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
    for op, args in steps:
        if op == "resize":
            x = F.interpolate(x[None], size=args, mode=mode, **kw)[0]
        elif op == "crop":
            top, left, h, w = args
            x = x[:, top:top + h, left:left + w]
        elif op == "hflip":
            x = x.flip(-1)
        else:  # pad: left, top, right, bottom (torch's own order is left, right, top, bottom)
            left, top, right, bottom = args
            c, h, w = x.shape
            canvas = fill.to(x.dtype).view(-1, 1, 1).expand(c, h + top + bottom, w + left + right).clone()
            canvas[:, top:top + h, left:left + w] = x
            x = canvas
    return x


def _pil_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image (or an HWC/HW uint8 array) as a float CHW tensor in [0, 1]."""
    import numpy as np

    if hasattr(image, "mode"):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        arr = np.asarray(image)
    else:
        arr = np.asarray(image)
    t = torch.from_numpy(np.array(arr, copy=True))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.to(torch.float32) / (255.0 if t.dtype == torch.uint8 else 1.0)


def arch_preprocess(spec: str | None) -> dict[str, Any]:
    """Preprocessing an arch spec declares: torchvision weights' transforms, timm's pretrained config;
    nothing for other specs. Read from the libraries' tables; never downloads anything."""
    scheme, _, name = (spec or "").partition(":")
    if scheme == "torchvision":
        return torchvision_defaults(name)
    if scheme == "timm":
        try:
            import timm

            cfg = timm.get_pretrained_cfg(name)
        except Exception:  # noqa: BLE001 - no timm, or a name without a config
            return {}
        return timm_defaults(cfg.to_dict() if cfg is not None else {})
    return {}


def timm_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """Preprocessing in a timm ``pretrained_cfg`` (input size, crop fraction, interpolation, mean, std)."""
    if not isinstance(cfg, dict):
        return {}
    out: dict[str, Any] = {}
    size = cfg.get("test_input_size") or cfg.get("input_size")
    if size and len(size) == 3:
        out["size"], out["channels"] = int(size[-1]), int(size[0])
        crop_pct = cfg.get("test_crop_pct") or cfg.get("crop_pct")
        if crop_pct:
            out["resize"] = int(round(out["size"] / float(crop_pct)))
    if cfg.get("interpolation") in INTERPOLATIONS:
        out["interpolation"] = cfg["interpolation"]
    if cfg.get("mean") and cfg.get("std"):
        out["mean"], out["std"] = tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"]))
    return out


def torchvision_defaults(name: str) -> dict[str, Any]:
    """Preprocessing of torchvision's weights for model ``name`` (its ``DEFAULT`` weights' transforms:
    read from the enum, nothing downloaded)."""
    try:
        import torchvision
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except Exception:  # noqa: BLE001 - no torchvision, or a model without published weights
        return {}
    t = weights.transforms()
    if not hasattr(t, "mean"):  # a detector: it normalises and resizes inside its own transform
        return detection_defaults(name)
    crop, resize = list(getattr(t, "crop_size", [None]))[0], list(getattr(t, "resize_size", [None]))[0]
    out: dict[str, Any] = {"mean": tuple(map(float, t.mean)), "std": tuple(map(float, t.std)), "channels": 3}
    if crop:
        out["size"] = int(crop)
        if resize:
            out["resize"] = int(resize)
    interp = str(getattr(t, "interpolation", "")).split(".")[-1].lower()
    if interp in INTERPOLATIONS:
        out["interpolation"] = interp
    return out


def detection_defaults(name: str) -> dict[str, Any]:
    """A torchvision detector's own preprocessing, read from its ``GeneralizedRCNNTransform`` (built
    without weights): mean, std, and its fixed size (SSDlite: 320) or shorter-side size (FCOS/RetinaNet:
    800), as a letterbox, since edgekd replaces that transform with its own preprocessing."""
    from ..models.detectors import torchvision_detection_model

    try:
        transform = torchvision_detection_model(name, None).transform
    except Exception:  # noqa: BLE001 - not a detector edgekd wraps: nothing declared
        return {}
    fixed = getattr(transform, "fixed_size", None)
    size = int(fixed[0]) if fixed else int(transform.min_size[0])
    return {"mean": tuple(map(float, transform.image_mean)), "std": tuple(map(float, transform.image_std)),
            "channels": 3, "size": size, "letterbox": True}


def resolve_preprocess(recipe: PreprocessSpec | None, architecture: dict[str, Any],
                       source: dict[str, Any]) -> Preprocess:
    """Each key from the recipe if it gives one, else the architecture, else the source."""
    given = recipe.model_dump(exclude_none=True) if recipe is not None else {}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key in ("size", "resize", "interpolation", "mean", "std", "channels", "letterbox"):
        for label, layer in (("recipe", given), ("architecture", architecture), ("source", source)):
            if layer.get(key) is not None:
                values[key], origin[key] = layer[key], label
                break
    if values.get("letterbox") and (values.get("size") is None or given.get("resize") is not None):
        raise DataError("data.preprocess.letterbox needs data.preprocess.size (the square it pads to) and no "
                        "resize (a letterbox scales the longer side to size; nothing is cropped)")
    if values.get("letterbox"):
        values.pop("resize", None)  # an architecture's crop ratio has no place in a letterbox
        origin.pop("resize", None)
    if "resize" in values and "size" not in values:
        raise DataError("data.preprocess.resize needs data.preprocess.size (the centre crop after resizing)")
    if values.get("resize") is not None and values["resize"] < values["size"]:
        raise DataError(f"data.preprocess: resize {values['resize']} is smaller than the crop size {values['size']}")
    if origin.get("resize") != origin.get("size") and origin.get("resize") == "architecture":
        values.pop("resize")  # the architecture's crop ratio belongs to its own size, not the recipe's
        origin.pop("resize")
    mean, std = values.get("mean"), values.get("std")
    if (mean is None) != (std is None):
        raise DataError("data.preprocess: give both mean and std, or neither")
    return Preprocess(size=values.get("size"), resize=values.get("resize"),
                      interpolation=values.get("interpolation", "bilinear"),
                      mean=tuple(mean) if mean is not None else None, std=tuple(std) if std is not None else None,
                      channels=values.get("channels"), origin=origin, letterbox=values.get("letterbox") or None)


def _crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
              gen: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (10 tries, then the centre), drawn from ``gen``."""
    import math

    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=gen)))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(torch.rand(1, generator=gen)))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            return top, left, ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def augment_batch(x: torch.Tensor, spec: Augment, gen: torch.Generator, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Random-resized crops, shifts and horizontal flips (torchvision.transforms.v2's functional ops),
    drawn from ``gen`` so runs repeat exactly whatever the loader workers. Shifted-in pixels take
    ``fill`` (per channel: what black is after normalisation; 0 for unnormalised data)."""
    n, c, h, w = x.shape
    if spec.crop_scale is not None:
        from torchvision.transforms.v2 import functional as TF

        boxes = [_crop_box(h, w, spec.crop_scale, spec.crop_ratio, gen) for _ in range(n)]
        x = torch.stack([TF.resized_crop(x[i], *boxes[i], size=[h, w], antialias=True) for i in range(n)])
    if spec.shift > 0:
        s = spec.shift
        padded = F.pad(x, (s, s, s, s))
        if fill is not None:
            border = torch.ones(1, 1, h, w, dtype=x.dtype)
            border = 1 - F.pad(border, (s, s, s, s))
            padded = padded + border * fill.view(1, c, 1, 1).to(x.dtype)
        dy = torch.randint(0, 2 * s + 1, (n,), generator=gen).tolist()
        dx = torch.randint(0, 2 * s + 1, (n,), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if spec.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x
