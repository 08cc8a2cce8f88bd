"""The one training loop shared by the teacher, distillation and quantization-aware training.

What a user should be able to trust about it:
- deterministic on CPU for a given seed and thread count (seeded permutation, augmentation and init);
- cosine learning rate; the best epoch on the validation split is kept; optional early stopping;
- a non-finite loss stops training at that step with a StageError naming the loss term;
- with ``state_path`` the whole loop state is saved after every epoch (atomically), and a killed run
  continues from its last finished epoch with the same result as an uninterrupted one;
- under ``torchrun`` the student (with the objective's trainable parts) is wrapped in DDP, and each rank
  trains on its shard of every global batch, so the global batch and the result match one process.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .config import Augment
from .data import Splits, augment_batch
from .errors import StageError
from .features import capture
from .fileio import atomic_path
from .losses import Batch
from .objective import Objective
from .progress import console, progress_bar
from .teacher_outputs import TeacherOutputs


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int = 0


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_logits(model, x).argmax(1) == y).float().mean())


class _Trainee(nn.Module):
    """Student plus objective as one module, so DDP sees (and averages) every trainable parameter."""

    def __init__(self, student: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.student, self.objective = student, objective

    def forward(self, x: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with capture(self.student, self.objective.student_taps(), batch.student_features):
            batch.logits = self.student(x)
        return self.objective(batch)


def fit(model: nn.Module, splits: Splits, objective: Objective, *, epochs: int, lr: float, weight_decay: float,
        batch_size: int, seed: int, label: str, teacher: TeacherOutputs | None = None, patience: int | None = None,
        augment: Augment | None = None, state_path: Path | None = None, state_key: str = "") -> FitResult:
    """Train ``model`` in place on the train split and leave it at its best validation epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    trainee = _Trainee(model, objective)
    rank, world = distributed.rank(), distributed.world()
    engine: nn.Module = trainee
    if world > 1:
        engine = nn.parallel.DistributedDataParallel(trainee)
    params = [p for p in trainee.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n = len(splits.x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    labeled = bool((splits.y_train >= 0).all())
    result = FitResult(best_val_accuracy=-1.0, best_epoch=-1)
    best_state: dict | None = None
    since_best, start = 0, 0

    saved = _load_state(state_path, state_key)
    if saved is not None:
        model.load_state_dict(saved["model"])
        objective.load_state_dict(saved["objective"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        gen.set_state(saved["generator"])
        aug_gen.set_state(saved["augment_generator"])
        torch.set_rng_state(saved["torch_rng"])
        best_state, since_best, start = saved["best_state"], saved["since_best"], saved["epoch"]
        result = FitResult(saved["best_val_accuracy"], saved["best_epoch"], saved["history"],
                           resumed_from_epoch=start)
        console.print(f"{label}: resuming after epoch {start}/{epochs} from {state_path}")

    with progress_bar(label, (epochs - start) * steps_per_epoch) as bar:
        for epoch in range(start, epochs):
            if patience is not None and since_best >= patience:
                result.stopped_early = True
                break
            trainee.train()
            order = torch.randperm(n, generator=gen)
            total, seen, began = 0.0, 0, time.perf_counter()
            for step in range(steps_per_epoch):
                idx = order[step * batch_size:(step + 1) * batch_size]
                if world > 1:
                    if len(idx) < world:  # every rank needs a sample, or DDP's all-reduce would hang
                        continue
                    idx = idx[rank::world]
                x = splits.x_train[idx]
                if augment is not None and augment.active:
                    x = augment_batch(x, augment, aug_gen)
                t_logits, t_feats = teacher(idx, x) if teacher is not None else ([], {})
                batch = Batch(logits=torch.empty(0), labels=splits.y_train[idx] if labeled else None, index=idx,
                              teacher_logits=t_logits, teacher_features=t_feats, epoch=epoch, epochs=epochs)
                loss, parts = engine(x, batch)
                values = {name: float(v.detach()) for name, v in parts.items()}
                for name, v in values.items():
                    if not math.isfinite(v):
                        raise StageError(f"{label}: loss term {name!r} became {v} at epoch {epoch + 1} step "
                                         f"{step + 1}; lower the learning rate (lr={lr}) or this term's weight, "
                                         f"or check the data for NaN/Inf")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                objective.after_step(values, batch)
                step_loss = float(loss.detach())
                total += step_loss * len(idx)
                seen += len(idx)
                bar.advance(status=f"loss {step_loss:.3f}")
            objective.end_epoch(world > 1)
            seconds = time.perf_counter() - began
            val = accuracy(model, splits.x_val, splits.y_val)
            result.history.append({"epoch": epoch + 1, "loss": total / max(1, seen), "val_accuracy": val,
                                   "seconds": seconds, "samples": seen})
            bar.advance(0, status=f"val {val:.3f}")
            if val > result.best_val_accuracy:
                result.best_val_accuracy, result.best_epoch, since_best = val, epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
            if state_path is not None and rank == 0:
                _save_state(state_path, {
                    "key": state_key, "epoch": epoch + 1, "model": model.state_dict(),
                    "objective": objective.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "generator": gen.get_state(),
                    "augment_generator": aug_gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "best_state": best_state, "since_best": since_best, "best_val_accuracy": result.best_val_accuracy,
                    "best_epoch": result.best_epoch, "history": result.history})
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path | None, key: str) -> dict | None:
    """The saved loop state if it belongs to this exact training (same key), else None."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file: start over rather than fail
        console.print(f"[yellow]{path}: unreadable training state; starting this stage from epoch 0[/yellow]")
        return None
    return state if state.get("key") == key else None
