"""Architectures outside edgekd's zoo, for tests: importable as ``--arch tests.models:NAME``.

A residual CNN (coupled channels through an add: Torch-Pruning must follow it) and a tiny ViT (a
different family, for OFA's CNN<->ViT distillation).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    def __init__(self, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = _Residual(16)
        self.down = nn.Sequential(nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.block(self.stem(x))).mean((2, 3)))


class TinyViT(nn.Module):
    """Patch embedding, two transformer encoder layers, mean-pooled tokens, linear head."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, dim: int = 32, patch: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim, batch_first=True, dropout=0.0)
        self.blocks = nn.ModuleList(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(1))


class DeadChannelNet(nn.Module):
    """A small CNN whose first conv has a dead channel (zero weights, bias -1: always 0 after ReLU).

    Giving the second conv a huge weight on that dead channel changes nothing in float, but it sets
    every output channel's per-channel weight scale, so at 4 bits the real weights round to zero: a
    layer deliberately sensitive to quantization, for testing accuracy-driven mixed precision.
    """

    def __init__(self, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Linear(32, num_classes)
        with torch.no_grad():  # no gradient reaches a channel that ReLU always zeroes: it stays dead
            self.features[0].weight[0].zero_()
            self.features[0].bias[0] = -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))  # 8 channels x 2 x 2 quadrants


def quarter_digits_cnn(num_classes: int = 4, in_channels: int = 1) -> nn.Module:
    """edgekd's DigitsCNN at a quarter width (16/32/64/64 channels): BN after every conv, three map scales."""
    from edgekd.models.zoo import DigitsCNN

    return DigitsCNN(width=0.25, num_classes=num_classes, in_channels=in_channels)


class ShapeCheckedCNN(nn.Module):
    """A third-party style model whose forward checks the input shape in Python: it runs, but torch.fx
    cannot trace it for quantization (the check branches on a traced value)."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, input_size: int = 16) -> None:
        super().__init__()
        self.input_size = input_size
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class OpaqueCNN(nn.Module):
    """A model no part of which torch.fx can trace: its only layer is applied functionally, after token
    bookkeeping (``math.sqrt`` of a traced count) that even Brevitas' value tracer cannot follow."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_channels, 3, 3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = int(math.sqrt(x.shape[-2] * x.shape[-1]))
        x = x.reshape(x.shape[0], x.shape[1], side, side)
        return torch.nn.functional.conv2d(x, self.weight, padding=1).mean((2, 3))


class SizedCNN(nn.Module):
    """A model whose constructor needs an argument edgekd cannot guess (``input_size``)."""

    def __init__(self, input_size: int, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8 * (input_size // 2) ** 2, num_classes)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))
