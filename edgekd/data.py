"""Building train / validation / test splits from a recipe's ``data:`` block.

The caller owns data (DESIGN.md): splits are built once here and handed to every stage and backend,
so the teacher, the student and every exported artifact are measured on the same test samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .config import Augment, DataSpec
from .errors import DataError


@dataclass(frozen=True)
class Splits:
    """Tensors for each split; inputs are float32 NCHW, labels int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape (C, H, W)."""
        return tuple(self.x_train.shape[1:])

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def build_splits(spec: DataSpec) -> Splits:
    unlabeled = None
    if spec.source == "digits":
        x, y = _digits(spec.image_size)
        x = x.expand(-1, spec.channels, -1, -1).contiguous()
    elif spec.source == "npz":
        x, y, unlabeled = _npz(Path(spec.path or ""))
    else:
        x, y = _synthetic(spec)
    splits = _split(x, y, spec)
    if unlabeled is None:
        return splits
    # Unlabeled samples join the train split with label -1: only label-free losses may train on them.
    return Splits(torch.cat([splits.x_train, unlabeled]),
                  torch.cat([splits.y_train, torch.full((len(unlabeled),), -1, dtype=torch.int64)]),
                  splits.x_val, splits.y_val, splits.x_test, splits.y_test, splits.num_classes)


def augment_batch(x: torch.Tensor, spec: Augment, gen: torch.Generator) -> torch.Tensor:
    """Random shifts (zero padded) and horizontal flips, drawn from ``gen`` so runs repeat exactly."""
    n, _, h, w = x.shape
    if spec.shift > 0:
        s = spec.shift
        padded = F.pad(x, (s, s, s, s))
        dy = torch.randint(0, 2 * s + 1, (n,), generator=gen).tolist()
        dx = torch.randint(0, 2 * s + 1, (n,), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if spec.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


def _digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits (shipped inside the package), scaled to [0, 1], upsampled."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous(), torch.from_numpy(d.target.astype(np.int64))


def _npz(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x``/``y`` (split into train/val/test) and optional ``x_unlabeled`` (added to train only)."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays or "y" not in arrays:
            raise DataError(f"{path}: needs arrays 'x' (N,C,H,W float) and 'y' (N int labels), optionally "
                            f"'x_unlabeled'; has {list(arrays)}")
        x, y = arrays["x"], arrays["y"]
        unlabeled = arrays["x_unlabeled"] if "x_unlabeled" in arrays else None
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: 'x' must be (N,C,H,W) and 'y' (N,); got {x.shape} and {y.shape}")
    if unlabeled is not None and (unlabeled.ndim != 4 or unlabeled.shape[1:] != x.shape[1:]):
        raise DataError(f"{path}: 'x_unlabeled' must be (M,{','.join(map(str, x.shape[1:]))}); got {unlabeled.shape}")
    extra = torch.from_numpy(unlabeled.astype(np.float32)) if unlabeled is not None else None
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), extra


def _synthetic(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional blobs: each class brightens its own patch, so a tiny CNN can learn it."""
    g = torch.Generator().manual_seed(spec.seed)
    n, c, s = spec.samples, spec.channels, spec.image_size
    y = torch.randint(0, spec.classes, (n,), generator=g)
    x = 0.3 * torch.rand(n, c, s, s, generator=g)
    cells = int(np.ceil(np.sqrt(spec.classes)))
    patch = s // cells
    for k in range(spec.classes):
        r, col = divmod(k, cells)
        x[y == k, :, r * patch:(r + 1) * patch, col * patch:(col + 1) * patch] += 0.7
    return x, y


def _split(x: torch.Tensor, y: torch.Tensor, spec: DataSpec) -> Splits:
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed))
    n_train = int(round(spec.split[0] * n))
    n_val = int(round(spec.split[1] * n))
    idx = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    if any(len(i) == 0 for i in idx):
        raise DataError(f"data: {n} samples are too few for split {spec.split}")
    num_classes = int(y.max()) + 1
    if int(y.min()) < 0:
        raise DataError(f"data: labels must be 0..C-1, found {int(y.min())}; put unlabeled images in 'x_unlabeled'")
    return Splits(x[idx[0]], y[idx[0]], x[idx[1]], y[idx[1]], x[idx[2]], y[idx[2]], num_classes)
