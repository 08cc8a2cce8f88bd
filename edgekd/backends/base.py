"""The backend contract: compile an exported file for a target, then run it.

Backends see only exported files. Capabilities are data (``Capabilities``: devices, target keys,
precisions), read by ``config.Target`` to refuse a target at load time; heavy imports happen inside
``compile``/``availability`` so that listing backends costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Target


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports: device names (upper case; ``GPU.1`` matches ``GPU``), the target keys
    it reads beyond the common ones, and the values its ``precision`` key takes."""

    devices: tuple[str, ...]
    options: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()


class CompiledModel(ABC):
    """A model loaded into a runtime, ready for synchronous calls at a fixed batch size."""

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

    def device_times_ms(self) -> list[float] | None:
        """Per-call device compute times since the last ``reset_device_times`` (GPU backends time the
        kernels with events, apart from the host's view that includes copies); None where the host
        time is all there is."""
        return None

    def reset_device_times(self) -> None:
        """Forget recorded device times (called after warm-up)."""


class Backend(ABC):
    name: str
    pip_extra: str
    capabilities: Capabilities

    @abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(True, version) when the runtime can run here, else (False, the reason)."""

    @abstractmethod
    def compile(self, onnx_path: Path, target: Target, batch: int = 1) -> CompiledModel:
        """Load ``onnx_path`` with the target's settings; ``batch`` > 1 re-shapes a batch-1 file's input."""

    def native_command(self, onnx_path: Path, target: Target) -> str:
        """The runtime's own benchmark tool, invoked with the same settings as ``target`` (``--emit-native``)."""
        raise NotImplementedError


def predict(model: CompiledModel, x: np.ndarray) -> np.ndarray:
    """Logits of the compiled artifact itself, one sample per call (batch 1, as exported).

    Each output is copied: a runtime may hand back a view of its output buffer (OpenVINO's infer
    request does), which the next call overwrites.
    """
    return np.concatenate([np.array(model(x[i:i + 1]), copy=True).reshape(1, -1) for i in range(len(x))])


def evaluate_accuracy(model: CompiledModel, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the compiled artifact itself on ``x``."""
    return float(np.mean(predict(model, x).argmax(1) == y))


def batched_onnx(onnx_path: Path, batch: int) -> bytes:
    """``onnx_path`` re-declared for ``batch`` inputs (a batch-1 export fixes dim 0 to 1): the input and
    output shapes are rewritten with onnx's own tool and the stale intermediate shapes dropped. A graph
    that bakes batch 1 into a Reshape still fails when run; the caller reports that as the reason."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(onnx_path))
    dims = lambda vi: [batch] + [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim][1:]  # noqa: E731
    inputs = {i.name: dims(i) for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}}
    outputs = {o.name: dims(o) for o in model.graph.output}
    del model.graph.value_info[:]
    return update_inputs_outputs_dims(model, inputs, outputs).SerializeToString()
