"""The one training loop shared by the teacher, distillation and quantization-aware training.

Deterministic on CPU for a given seed; cosine learning rate; the best epoch on the validation split
is kept; a non-finite loss stops training at once with a StageError that says where.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .data import Splits
from .errors import StageError
from .progress import progress_bar

# (student logits, teacher logits or None, labels) -> scalar loss
LossFn = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_logits(model, x).argmax(1) == y).float().mean())


def fit(model: nn.Module, splits: Splits, loss_fn: LossFn, *, epochs: int, lr: float, weight_decay: float,
        batch_size: int, seed: int, label: str, teacher_logits: torch.Tensor | None = None) -> FitResult:
    """Train ``model`` in place on the train split and leave it at its best validation epoch.

    ``teacher_logits`` (aligned with ``splits.x_train``) are computed once by the caller: inputs are
    not augmented, so the teacher's outputs do not change between epochs.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n = len(splits.x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    best = FitResult(best_val_accuracy=-1.0, best_epoch=-1)
    best_state = None
    with progress_bar(label, epochs * steps_per_epoch) as bar:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch_size:(step + 1) * batch_size]
                logits = model(splits.x_train[idx])
                t = teacher_logits[idx] if teacher_logits is not None else None
                loss = loss_fn(logits, t, splits.y_train[idx])
                if not torch.isfinite(loss):
                    raise StageError(f"{label}: loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                                     f"lower the learning rate (lr={lr}) or check the data for NaN/Inf")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                bar.advance(status=f"loss {loss.item():.3f}")
            val = accuracy(model, splits.x_val, splits.y_val)
            best.history.append({"epoch": epoch + 1, "loss": total / n, "val_accuracy": val})
            bar.advance(0, status=f"val {val:.3f}")
            if val > best.best_val_accuracy:
                best.best_val_accuracy, best.best_epoch = val, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best
