"""Evaluating a torch model on a split, batch by batch (never a whole split in memory)."""

from __future__ import annotations

import torch
from torch import nn

from ..data import Splits
from .device import CPU, Device


@torch.no_grad()
def predict_logits(model: nn.Module, splits: Splits, split: str, device: Device = CPU,
                   limit: int | None = None) -> torch.Tensor:
    """Logits (CPU, float32) of ``model`` on ``split`` in the split's order (the first ``limit`` samples).

    Runs on ``device`` wherever the model is kept: training hands models back on the CPU, and the stages
    then score them on the run's device (on a GPU machine this crashed with "Input type
    (CUDABFloat16Type) and weight type (torch.FloatTensor) should be the same"); the model goes back to
    where it was."""
    model.eval()
    home = next((p.device for p in model.parameters()), device.torch_device)
    model.to(device.torch_device)
    out = []
    try:
        for x, _, _ in splits.loader(split, limit=limit):
            x = x.to(device.torch_device, non_blocking=True)
            with device.autocast():
                out.append(model(x).float().cpu())
    finally:
        model.to(home)
    return torch.cat(out)


def accuracy(model: nn.Module, splits: Splits, split: str, device: Device = CPU) -> float:
    """The model's score on ``split`` by the run's task (``splits.scoring``): top-1 accuracy, the mean
    cosine to the teacher's embeddings, or a recipe's own metric."""
    return score_outputs(predict_logits(model, splits, split, device), splits, split)


def score_outputs(outputs: torch.Tensor, splits: Splits, split: str) -> float:
    """``outputs`` (the split's, in order) scored by the run's task."""
    return splits.scoring.score(outputs, splits.labels(split), split)
