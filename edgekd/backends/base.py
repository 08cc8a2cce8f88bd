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

from ..errors import BackendError
from .inputs import GraphInput, ShapeRequest
from ..config.target import Target


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports: device names (upper case; ``GPU.1`` matches ``GPU``) and the values its
    ``precision`` key takes (its other keys are its ``target_model``'s fields)."""

    devices: tuple[str, ...]
    precisions: tuple[str, ...] = ()
    # (device, INT8 layout: edgekd.artifacts.qdq_rules.LAYOUTS), best first, where a device's kernels want another
    # than s8s8
    int8_layouts: tuple[tuple[str, str], ...] = ()
    # "signed": its INT8 takes only signed activations with zero point 0 (TensorRT's explicit quantization),
    # so a graph input quantized to UINT8 would not build; "any" otherwise
    int8_input: str = "any"
    # the form of Hardswish it runs fastest in INT8: "split" (x * hardsigmoid(x), ONNX Runtime's QLinear ops)
    # or "fused" (one HardSwish op, OpenVINO's; the split form costs it what it gains ORT: benchmarks/int8_zoo.py)
    hardswish: str = "fused"


class CompiledModel(ABC):
    """A model loaded into a runtime, ready for synchronous calls at fixed input shapes."""

    inputs: list[GraphInput]                   # what the file takes (names, dtypes, declared dims)
    input_shapes: dict[str, tuple[int, ...]]   # the shapes it was compiled for, per input

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape (an image classifier's only one)."""
        return self.input_shapes[self.inputs[0].name]

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the (first and only) input, return the first output."""

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """One call with every input by name, return the first output. Runtimes that take several
        inputs override this; a single-input one is the same as calling it."""
        if len(feed) != 1:
            raise BackendError(f"{type(self).__name__} runs single-input models; this feed has {len(feed)} inputs")
        return self(next(iter(feed.values())))

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
    target_model: type[Target] = Target  # its target keys: the common ones and its own options
    file_suffix: str = ".onnx"  # the exported file this backend runs

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The target keys this backend reads beyond the common ones."""
        return tuple(k for k in cls.target_model.model_fields if k not in Target.model_fields)

    def __init__(self, *, trust_checkpoint: bool = False, allow_globals: tuple[str, ...] = ()) -> None:
        # Whether a file this backend opens may run code from itself (only torch programs can): the
        # user's --trust-checkpoint / --allow-global, never a target's setting.
        self.trust_checkpoint = trust_checkpoint
        self.allow_globals = tuple(allow_globals)

    def int8_layouts(self, target: "Target") -> list[str]:
        """The INT8 file layouts this backend runs at full speed on ``target``'s device, best first
        (``s8s8``, the main file, last): a variant is measured in the first one it was written in."""
        device = target.device.upper().split(".")[0]
        return [layout for d, layout in self.capabilities.int8_layouts if d == device] + ["s8s8"]

    @abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(True, version) when the runtime can run here, else (False, the reason)."""

    @abstractmethod
    def compile(self, onnx_path: Path, target: Target, shape: ShapeRequest = None) -> CompiledModel:
        """Load ``onnx_path`` with the target's settings, for input ``shape`` (one tuple for a
        single-input file, or per input name; ``inputs.resolve_shapes``)."""

    def native_command(self, onnx_path: Path, target: Target) -> str:
        """The runtime's own benchmark tool, invoked with the same settings as ``target`` (``--emit-native``)."""
        raise NotImplementedError


def predict(model: CompiledModel, x: np.ndarray) -> np.ndarray:
    """Logits of the compiled artifact itself, one sample per call (batch 1, as exported).

    Each output is copied: a runtime may hand back a view of its output buffer (OpenVINO's infer
    request does), which the next call overwrites.
    """
    from ..data.packed import packed_feed

    names = [i.name for i in model.inputs]
    return np.concatenate([_one_sample(np.array(model.run(packed_feed(x[i:i + 1], names)), copy=True))
                           for i in range(len(x))])


def _one_sample(out: np.ndarray) -> np.ndarray:
    """One sample's output with its leading batch axis of 1, keeping its own shape (a detector's
    (1, anchors, 4 + C) rows stay rows); an output without a batch axis becomes one row."""
    return out if out.ndim >= 2 and out.shape[0] == 1 else out.reshape(1, -1)


def evaluate_accuracy(model: CompiledModel, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the compiled artifact itself on ``x``."""
    return float(np.mean(predict(model, x).argmax(1) == y))
