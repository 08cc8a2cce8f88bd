"""edgekd's built-in model zoo (``--arch edgekd:NAME``).

Small on purpose: the embedded default's teacher and its students. Every model takes ``width`` so a
recipe's ``student: {width: 0.5}`` derives a narrower member of the same family.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError
from ..registry import Registry

ZOO: Registry[Callable[..., nn.Module]] = Registry("edgekd model", CheckpointError)


class DigitsCNN(nn.Module):
    """A VGG-style CNN for 1x32x32 digits: about 0.96 M parameters and 76 M MACs at width 1.

    Large enough that narrowing and INT8 show up in latency; BatchNorm after every conv so that
    quantization can fold it (Brevitas ``MergeBatchNorm``).
    """

    def __init__(self, width: float = 1.0, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        ch = [max(8, int(round(c * width))) for c in (64, 128, 256, 256)]

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, ch[0]), nn.MaxPool2d(2),
            *block(ch[0], ch[1]), nn.MaxPool2d(2),
            *block(ch[1], ch[2]),
            *block(ch[2], ch[3]),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TinyCNN(nn.Module):
    """A two-conv CNN for fast tests (a few thousand parameters)."""

    def __init__(self, width: float = 1.0, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2 = max(4, int(round(16 * width))), max(4, int(round(32 * width)))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


ZOO.register("digits_cnn")(DigitsCNN)
ZOO.register("tiny_cnn")(TinyCNN)
