"""The one training loop shared by the teacher, distillation, pruning recovery and quantization-aware training.

What a user should be able to trust about it:
- it streams: each step reads one batch from the train loader (workers decode in parallel), so memory
  does not grow with the dataset;
- deterministic on CPU for a given seed and thread count (seeded permutation, augmentation and init),
  whatever the number of loader workers (augmentation runs here, from the run's generator);
- cosine learning rate; the best epoch on the validation split is kept; optional early stopping;
- a non-finite loss stops training at that step with a StageError naming the loss term;
- with ``state_path`` the whole loop state is saved after every epoch and, with ``checkpoint_every``,
  every that many steps (atomically); a killed run continues from the last save, mid-epoch included,
  and ends with the same weights on CPU as an uninterrupted one;
- on CUDA the student and teachers train there with autocast and channels-last, and come back to the
  CPU when training ends;
- under ``torchrun`` the student (with the objective's trainable parts) is wrapped in DDP, and each rank
  trains on its shard of every global batch, so the global batch and the result match one process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config.schema import Augment
from ..data import Splits, augment_batch
from ..errors import StageError
from ..models.features import capture
from ..fileio import atomic_path
from ..losses import Batch
from ..progress import console, progress_bar
from . import distributed
from .device import CPU, Device
from .evaluate import predict_logits, score_outputs
from .objective import Objective
from .teacher_outputs import TeacherOutputs


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    resumed_from_step: int = 0


def packed_mask(x: torch.Tensor) -> torch.Tensor | None:
    """A text batch's attention mask (packed (N, 3, S) int64 samples, ``edgekd.data.packed``); None for images."""
    from ..data.packed import PACKED_INPUTS, is_packed

    return x[:, PACKED_INPUTS.index("attention_mask")] if is_packed(x) else None


class _Trainee(nn.Module):
    """Student plus objective as one module, so DDP sees (and averages) every trainable parameter."""

    def __init__(self, student: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.student, self.objective = student, objective

    def forward(self, x: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with capture(self.student, self.objective.student_taps(), batch.student_features):
            batch.logits = self.student(x)
        return self.objective(batch)


def _fill(splits: Splits) -> torch.Tensor | None:
    """What a black pixel becomes after the run's normalisation: the fill for shifted-in borders."""
    p = splits.preprocess
    if getattr(p, "mean", None) is None or getattr(p, "std", None) is None:  # text: no pixels to fill
        return None
    return -torch.tensor(p.mean) / torch.tensor(p.std)


def fit(model: nn.Module, splits: Splits, objective: Objective, *, epochs: int, lr: float, weight_decay: float,
        seed: int, label: str, batch_size: int | None = None, teacher: TeacherOutputs | None = None,
        patience: int | None = None, augment: Augment | None = None, state_path: Path | None = None,
        state_key: str = "", device: Device = CPU, checkpoint_every: int | None = None) -> FitResult:
    """Train ``model`` in place on the train split and leave it at its best validation epoch, on the CPU."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    dev = device.torch_device
    saved = _load_state(state_path, state_key)
    if saved is not None:  # before the optimizer exists: Brevitas' load_state_dict *replaces* its activation-
        # scale Parameters, so an optimizer made first kept updating orphans and a resumed QAT froze every
        # activation scale (issue 14.7: resumed QAT runs differed from uninterrupted ones by up to 2.5e-3)
        model.load_state_dict(saved["model"])
        objective.load_state_dict(saved["objective"])
    model.to(dev, memory_format=device.memory_format)
    objective.to(dev)
    trainee = _Trainee(model, objective)
    rank, world = distributed.rank(), distributed.world()
    engine: nn.Module = trainee
    if world > 1:
        engine = nn.parallel.DistributedDataParallel(trainee, device_ids=[dev.index] if device.cuda else None)
    params = [p for p in trainee.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batch_size = batch_size or splits.batch_size
    n = splits.size("train")
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda") if device.cuda and device.amp == "fp16" else None
    labeled = splits.labeled
    fill = _fill(splits)
    result = FitResult(best_val_accuracy=-1.0, best_epoch=-1)
    best_state: dict | None = None
    since_best, start, start_step, carried = 0, 0, 0, (0.0, 0)

    if saved is not None:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        gen.set_state(saved["generator"])
        aug_gen.set_state(saved["augment_generator"])
        torch.set_rng_state(saved["torch_rng"])
        best_state, since_best, start = saved["best_state"], saved["since_best"], saved["epoch"]
        start_step, carried = saved.get("step", 0), tuple(saved.get("epoch_totals", (0.0, 0)))
        result = FitResult(saved["best_val_accuracy"], saved["best_epoch"], saved["history"],
                           resumed_from_epoch=start, resumed_from_step=start_step)
        where = f"step {start_step} of epoch {start + 1}" if start_step else f"epoch {start}"
        console.print(f"{label}: resuming after {where}/{epochs} from {state_path}")

    def save(epoch: int, step: int, epoch_gen: torch.Tensor, totals: tuple[float, int]) -> None:
        if state_path is None or rank != 0:
            return
        _save_state(state_path, {
            "key": state_key, "epoch": epoch, "step": step, "epoch_totals": list(totals),
            "model": model.state_dict(), "objective": objective.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "generator": epoch_gen, "augment_generator": aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "best_state": best_state, "since_best": since_best,
            "best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
            "history": result.history})

    loader, batches = splits.epoch_loader(batch_size, rank, world)
    with progress_bar(label, (epochs - start) * steps_per_epoch - start_step) as bar:
        for epoch in range(start, epochs):
            if patience is not None and since_best >= patience:
                result.stopped_early = True
                break
            trainee.train()
            epoch_gen = gen.get_state()  # a mid-epoch save redraws this epoch's order from here
            order = torch.randperm(n, generator=gen)
            skip = start_step if epoch == start else 0
            total, seen = carried if epoch == start else (0.0, 0)
            began = time.perf_counter()
            batches.order, batches.skip = order, skip
            for step, (x, y, idx) in enumerate(loader, start=skip):
                if augment is not None and augment.active:
                    x = augment_batch(x, augment, aug_gen, fill)
                x = x.to(dev, non_blocking=True, memory_format=device.memory_format if x.dim() == 4
                         else torch.contiguous_format)  # channels_last is for image batches only
                y = y.to(dev, non_blocking=True)
                with device.autocast():
                    t_logits, t_feats = teacher(idx, x) if teacher is not None else ([], {})
                    batch = Batch(logits=torch.empty(0), labels=y if labeled else None, index=idx,
                                  teacher_logits=t_logits, teacher_features=t_feats, epoch=epoch, epochs=epochs,
                                  attention_mask=packed_mask(x))
                    loss, parts = engine(x, batch)
                values = {name: float(v.detach()) for name, v in parts.items()}
                for name, v in values.items():
                    if not math.isfinite(v):
                        raise StageError(f"{label}: loss term {name!r} became {v} at epoch {epoch + 1} step "
                                         f"{step + 1}; lower the learning rate (lr={lr}) or this term's weight, "
                                         f"or check the data for NaN/Inf")
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                objective.after_step(values, batch)
                step_loss = float(loss.detach())
                total += step_loss * len(idx)
                seen += len(idx)
                bar.advance(status=f"loss {step_loss:.3f}")
                if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps_per_epoch:
                    save(epoch, step + 1, epoch_gen, (total, seen))
            objective.end_epoch(world > 1)
            seconds = time.perf_counter() - began
            val = checked_accuracy(model, splits, device, f"{label}: after epoch {epoch + 1} (lr={lr})")
            result.history.append({"epoch": epoch + 1, "loss": total / max(1, seen), "val_accuracy": val,
                                   "seconds": seconds, "samples": seen})
            bar.advance(0, status=f"val {val:.3f}")
            if val > result.best_val_accuracy:
                result.best_val_accuracy, result.best_epoch, since_best = val, epoch + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                since_best += 1
            save(epoch + 1, 0, gen.get_state(), (0.0, 0))
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu", memory_format=torch.contiguous_format)
    objective.to("cpu")
    if teacher is not None:
        teacher.to_cpu()
    model.eval()
    return result


def checked_accuracy(model: nn.Module, splits: Splits, device: Device, where: str) -> float:
    """Validation accuracy, refusing a diverged model: a step at ``lr: 1e30`` leaves finite losses behind
    it but weights near 1e30 whose outputs overflow; saving such a model as a finished stage is a lie."""
    logits = predict_logits(model, splits, "val", device)
    broken = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if broken is not None or not torch.isfinite(logits).all():
        what = f"weight {broken!r}" if broken else "its validation outputs"
        raise StageError(f"{where}: training diverged: {what} became NaN/Inf; lower the learning rate")
    return score_outputs(logits, splits, "val")


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
        console.print(f"{path}: unreadable training state; starting this stage from epoch 0", style="yellow")
        return None
    return state if state.get("key") == key else None
