"""The one training loop shared by the teacher, distillation, pruning recovery and quantization-aware training.

What a user should be able to trust about it:
- it streams: each step reads one batch from the train loader (workers decode in parallel), so memory
  does not grow with the dataset;
- deterministic on CPU for a given seed and thread count (seeded permutation, augmentation and init),
  whatever the number of loader workers (augmentation runs here, from the run's generator);
- cosine learning rate; the best epoch on the validation split is kept; optional early stopping;
- a non-finite loss stops training at that step with a StageError naming the loss term;
- with ``LoopSettings.state_path`` the whole loop state is saved after every epoch and, with ``checkpoint_every``,
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
from typing import Any

import torch
from torch import nn

from ..config.schema import Augment, TrainSpec
from ..data import Splits, augment_batch
from ..data.boxes import augment_detection_batch
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


@dataclass(frozen=True)
class LoopSettings:
    """What a run fixes for every training in it: the seed, where it trains, augmentation, and where
    (and how often) the loop state is saved for ``--resume``."""

    seed: int = 0
    device: Device = CPU
    augment: Augment | None = None
    state_path: Path | None = None
    state_key: str = ""             # the saved state belongs to this exact training (same key) or is ignored
    checkpoint_every: int | None = None  # also save every this many steps, not only per epoch
    batch_size: int | None = None   # the split's own when None


def fit(model: nn.Module, splits: Splits, objective: Objective, spec: TrainSpec, settings: LoopSettings = LoopSettings(),
        *, label: str, teacher: TeacherOutputs | None = None) -> FitResult:
    """Train ``model`` in place on the train split and leave it at its best validation epoch, on the CPU."""
    return _Loop(model, splits, objective, spec, settings, label, teacher).run()


class _Loop:
    """One training: the optimizer, schedule and generators built once, then epochs of steps, each epoch
    scored on validation, the best kept; the whole state saved for a resume."""

    def __init__(self, model: nn.Module, splits: Splits, objective: Objective, spec: TrainSpec,
                 settings: LoopSettings, label: str, teacher: TeacherOutputs | None) -> None:
        self.model, self.splits, self.objective, self.spec, self.settings = model, splits, objective, spec, settings
        self.label, self.teacher, self.device = label, teacher, settings.device
        torch.manual_seed(settings.seed)
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.aug_gen = torch.Generator().manual_seed(settings.seed + 1)
        saved = _load_state(settings.state_path, settings.state_key)
        if saved is not None:  # before the optimizer exists: Brevitas' load_state_dict *replaces* its activation-
            # scale Parameters, so an optimizer made first kept updating orphans and a resumed QAT froze every
            # activation scale (issue 14.7: resumed QAT runs differed from uninterrupted ones by up to 2.5e-3)
            model.load_state_dict(saved["model"])
            objective.load_state_dict(saved["objective"])
        model.to(self.device.torch_device, memory_format=self.device.memory_format)
        objective.to(self.device.torch_device)
        self.trainee = _Trainee(model, objective)
        self.rank, self.world = distributed.rank(), distributed.world()
        self.engine: nn.Module = self.trainee
        if self.world > 1:
            self.engine = nn.parallel.DistributedDataParallel(
                self.trainee, device_ids=[self.device.torch_device.index] if self.device.cuda else None)
        params = [p for p in self.trainee.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        self.batch_size = settings.batch_size or splits.batch_size
        self.n = splits.size("train")
        self.steps_per_epoch = math.ceil(self.n / self.batch_size)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(1, spec.epochs * self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler("cuda") if self.device.cuda and self.device.amp == "fp16" else None
        self.fill = _fill(splits)
        self.labeled = splits.labeled
        self.result = FitResult(best_val_accuracy=-1.0, best_epoch=-1)
        self.best_state: dict | None = None
        self.since_best, self.start, self.start_step, self.carried = 0, 0, 0, (0.0, 0)
        if saved is not None:
            self._resume(saved)

    def _resume(self, saved: dict) -> None:
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        self.gen.set_state(saved["generator"])
        self.aug_gen.set_state(saved["augment_generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.best_state, self.since_best, self.start = saved["best_state"], saved["since_best"], saved["epoch"]
        self.start_step, self.carried = saved.get("step", 0), tuple(saved.get("epoch_totals", (0.0, 0)))
        self.result = FitResult(saved["best_val_accuracy"], saved["best_epoch"], saved["history"],
                                resumed_from_epoch=self.start, resumed_from_step=self.start_step)
        where = f"step {self.start_step} of epoch {self.start + 1}" if self.start_step else f"epoch {self.start}"
        console.print(f"{self.label}: resuming after {where}/{self.spec.epochs} from {self.settings.state_path}")

    def _save(self, epoch: int, step: int, epoch_gen: torch.Tensor, totals: tuple[float, int]) -> None:
        if self.settings.state_path is None or self.rank != 0:
            return
        _save_state(self.settings.state_path, {
            "key": self.settings.state_key, "epoch": epoch, "step": step, "epoch_totals": list(totals),
            "model": self.model.state_dict(), "objective": self.objective.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "generator": epoch_gen,
            "augment_generator": self.aug_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "best_state": self.best_state, "since_best": self.since_best,
            "best_val_accuracy": self.result.best_val_accuracy, "best_epoch": self.result.best_epoch,
            "history": self.result.history})

    def run(self) -> FitResult:
        spec = self.spec
        loader, batches = self.splits.epoch_loader(self.batch_size, self.rank, self.world)
        with progress_bar(self.label, (spec.epochs - self.start) * self.steps_per_epoch - self.start_step) as bar:
            for epoch in range(self.start, spec.epochs):
                if spec.patience is not None and self.since_best >= spec.patience:
                    self.result.stopped_early = True
                    break
                self.trainee.train()
                epoch_gen = self.gen.get_state()  # a mid-epoch save redraws this epoch's order from here
                batches.order = torch.randperm(self.n, generator=self.gen)
                batches.skip = self.start_step if epoch == self.start else 0
                began = time.perf_counter()
                total, seen = self._epoch(epoch, loader, batches.skip, epoch_gen, bar)
                self.objective.end_epoch(self.world > 1)
                self._validate(epoch, total, seen, time.perf_counter() - began, bar)
                self._save(epoch + 1, 0, self.gen.get_state(), (0.0, 0))
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.to("cpu", memory_format=torch.contiguous_format)
        self.objective.to("cpu")
        if self.teacher is not None:
            self.teacher.to_cpu()
        self.model.eval()
        return self.result

    def _epoch(self, epoch: int, loader: Any, skip: int, epoch_gen: torch.Tensor, bar: Any) -> tuple[float, int]:
        """One epoch's steps from ``skip``; returns the summed loss and the samples seen."""
        total, seen = self.carried if epoch == self.start else (0.0, 0)
        dev, device, augment = self.device.torch_device, self.device, self.settings.augment
        for step, (x, y, idx) in enumerate(loader, start=skip):
            if augment is not None and augment.active and y.dim() == 3:  # a detection batch: boxes move too
                x, y = augment_detection_batch(x, y, augment, self.aug_gen, self.fill)
            elif augment is not None and augment.active:
                x = augment_batch(x, augment, self.aug_gen, self.fill)
            x = x.to(dev, non_blocking=True, memory_format=device.memory_format if x.dim() == 4
                     else torch.contiguous_format)  # channels_last is for image batches only
            y = y.to(dev, non_blocking=True)
            with device.autocast():
                t_logits, t_feats = self.teacher(idx, x) if self.teacher is not None else ([], {})
                batch = Batch(logits=torch.empty(0), labels=y if self.labeled else None, index=idx,
                              teacher_logits=t_logits, teacher_features=t_feats, epoch=epoch, epochs=self.spec.epochs,
                              attention_mask=packed_mask(x), input_size=tuple(x.shape[-2:]) if x.dim() == 4 else None)
                loss, parts = self.engine(x, batch)
            values = {name: float(v.detach()) for name, v in parts.items()}
            for name, v in values.items():
                if not math.isfinite(v):
                    raise StageError(f"{self.label}: loss term {name!r} became {v} at epoch {epoch + 1} step "
                                     f"{step + 1}; lower the learning rate (lr={self.spec.lr}) or this term's "
                                     f"weight, or check the data for NaN/Inf")
            self._step(loss)
            self.objective.after_step(values, batch)
            step_loss = float(loss.detach())
            total += step_loss * len(idx)
            seen += len(idx)
            bar.advance(status=f"loss {step_loss:.3f}")
            every = self.settings.checkpoint_every
            if every and (step + 1) % every == 0 and step + 1 < self.steps_per_epoch:
                self._save(epoch, step + 1, epoch_gen, (total, seen))
        return total, seen

    def _step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.sched.step()

    def _validate(self, epoch: int, total: float, seen: int, seconds: float, bar: Any) -> None:
        """Score the epoch on validation; keep the weights when they are the best so far."""
        val = checked_accuracy(self.model, self.splits, self.device,
                               f"{self.label}: after epoch {epoch + 1} (lr={self.spec.lr})")
        self.result.history.append({"epoch": epoch + 1, "loss": total / max(1, seen), "val_accuracy": val,
                                    "seconds": seconds, "samples": seen})
        bar.advance(0, status=f"val {val:.3f}")
        if val > self.result.best_val_accuracy:
            self.result.best_val_accuracy, self.result.best_epoch, self.since_best = val, epoch + 1, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.since_best += 1


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
