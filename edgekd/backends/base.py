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

from ..errors import InputError
from .target import Target


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports: device names (upper case; ``GPU.1`` matches ``GPU``), the target keys
    it reads beyond the common ones, and the values its ``precision`` key takes."""

    devices: tuple[str, ...]
    options: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    # (device, INT8 QDQ layout of edgekd.int8_layouts) where a device's kernels want another than s8s8
    int8_layouts: tuple[tuple[str, str], ...] = ()


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
    file_suffix: str = ".onnx"  # the exported file this backend runs

    def __init__(self, *, trust_checkpoint: bool = False, allow_globals: tuple[str, ...] = ()) -> None:
        # Whether a file this backend opens may run code from itself (only torch programs can): the
        # user's --trust-checkpoint / --allow-global, never a target's setting.
        self.trust_checkpoint = trust_checkpoint
        self.allow_globals = tuple(allow_globals)

    def int8_layout(self, target: "Target") -> str:
        """The INT8 file layout this backend runs at full speed on ``target``'s device."""
        return dict(self.capabilities.int8_layouts).get(target.device.upper().split(".")[0], "s8s8")

    @abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(True, version) when the runtime can run here, else (False, the reason)."""

    @abstractmethod
    def compile(self, onnx_path: Path, target: Target, shape: tuple[int, ...] | None = None) -> CompiledModel:
        """Load ``onnx_path`` with the target's settings, for input ``shape`` (``resolve_shape``)."""

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


def graph_input(onnx_path: Path) -> tuple[str, list[int | str]]:
    """The single graph input's name and declared dims (a symbolic dim as its name). A model with
    several inputs, or a non-float one, is refused: the harness feeds one seeded float tensor."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others on a damaged file
        raise InputError(f"{onnx_path}: not a readable ONNX model ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'empty'})") from None
    return _single_input(graph, onnx_path)


def _single_input(graph: Any, onnx_path: Path) -> tuple[str, list[int | str]]:
    import onnx

    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise InputError(f"{onnx_path}: edgekd times models with one input; this one has {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)})")
    elem = inputs[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise InputError(f"{onnx_path}: input {inputs[0].name!r} is {onnx.TensorProto.DataType.Name(elem)}; "
                         f"edgekd feeds FLOAT inputs")
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                            for d in inputs[0].type.tensor_type.shape.dim]


def resolve_shape(onnx_path: Path, shape: tuple[int, ...] | None) -> tuple[tuple[int, ...], bool]:
    """(the input shape to run, whether the file must be re-declared for it). The shape is ``shape``
    when given (same rank as the file's input), else the file's own, with a symbolic batch dim taken
    as 1; other symbolic dims need ``shape`` (``--shape``)."""
    name, dims = graph_input(onnx_path)
    if shape is not None:
        if len(shape) != len(dims):
            raise InputError(f"{onnx_path}: --shape {'x'.join(map(str, shape))} has rank {len(shape)}; input "
                             f"{name!r} has rank {len(dims)} ({'x'.join(map(str, dims))})")
        return tuple(shape), list(shape) != dims
    resolved = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
    if any(not isinstance(d, int) or d <= 0 for d in resolved):
        raise InputError(f"{onnx_path}: input {name!r} has dynamic dims ({'x'.join(map(str, dims))}); "
                         f"pass --shape, e.g. --shape 1x3x224x224")
    return tuple(resolved), resolved != dims


def reshaped_onnx(onnx_path: Path, shape: tuple[int, ...]) -> bytes:
    """``onnx_path`` with its input declared as ``shape`` and its outputs' batch dim as ``shape[0]``
    (onnx's own ``update_inputs_outputs_dims``; stale intermediate shapes dropped). Used to time a
    batch-1 export at batch N, or a dynamic one at a fixed shape. A graph that bakes batch 1 into a
    Reshape still fails when run; the caller reports that as the reason."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(onnx_path))
    name, _ = _single_input(model.graph, onnx_path)
    outputs = {o.name: [shape[0]] + [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{o.name}_{i}")
                                     for i, d in enumerate(o.type.tensor_type.shape.dim)][1:]
               for o in model.graph.output}
    del model.graph.value_info[:]
    for vi in [*model.graph.input, *model.graph.output]:  # the tool only fills dims it finds unset
        for d in vi.type.tensor_type.shape.dim:
            d.Clear()
    return update_inputs_outputs_dims(model, {name: list(shape)}, outputs).SerializeToString()
