"""The backend contract: compile an exported file for a target, then run it.

Backends see only exported files. Capabilities are data (``pip_extra``, ``devices``); heavy imports
happen inside ``compile``/``availability`` so that listing backends costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Target


class CompiledModel(ABC):
    """A model loaded into a runtime, ready for synchronous batch-1 calls."""

    input_shape: tuple[int, ...]

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one input, return the first output."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings the runtime reports back (threads, streams, precision), not what was asked."""

    @abstractmethod
    def precision(self, variant_precision: str) -> str:
        """What precision actually ran (OpenVINO may run an FP32 file in bf16)."""

    @abstractmethod
    def int8_layers(self) -> dict[str, Any]:
        """How many conv/matmul layers executed in INT8: ``{"int8": n, "total": m, "layers": {...}}``."""


class Backend(ABC):
    name: str
    pip_extra: str
    devices: tuple[str, ...]

    @abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(True, version) when the runtime can run here, else (False, the reason)."""

    @abstractmethod
    def compile(self, onnx_path: Path, target: Target) -> CompiledModel:
        """Load ``onnx_path`` with the target's settings."""


def predict(model: CompiledModel, x: np.ndarray) -> np.ndarray:
    """Logits of the compiled artifact itself, one sample per call (batch 1, as exported).

    Each output is copied: a runtime may hand back a view of its output buffer (OpenVINO's infer
    request does), which the next call overwrites.
    """
    return np.concatenate([np.array(model(x[i:i + 1]), copy=True).reshape(1, -1) for i in range(len(x))])


def evaluate_accuracy(model: CompiledModel, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the compiled artifact itself on ``x``."""
    return float(np.mean(predict(model, x).argmax(1) == y))
