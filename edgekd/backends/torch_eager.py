"""torch itself, the baseline users compare runtimes against: eager, or ``torch.compile`` where it
works (``torch_compile: true``; a model it cannot compile fails with the compiler's reason).

It runs ``.pt2`` files (``torch.export`` programs, which ``edgekd compress`` writes beside each FP32
ONNX file), so it too sees only exported artifacts. A ``.pt2`` archive can carry pickles that torch
opens with weights_only switched off, so programs load only through ``checkpoint.load_exported_program``
(refused without ``--trust-checkpoint`` when anything in them could run code). ``threads`` sets ``torch.set_num_threads``, which
is process-wide: a torch target changes it for whatever runs after it in the same process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pydantic import Field

from ..errors import BackendUnavailable, InputError
from .base import Backend, Capabilities, CompiledModel
from .inputs import GraphInput, ShapeRequest
from ..config.target import Target


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on the CPU, if any."""
    import os
    import shutil

    return next((c for c in (os.environ.get("CXX"), "g++", "clang++", "c++") if c and shutil.which(c)), None)


def program_input_dims(program: Any) -> list[int | str]:
    """The user input's dims of an exported program (a symbolic dim as its name)."""
    names = program.graph_signature.user_inputs
    if len(names) != 1:
        raise InputError(f"edgekd times models with one input; this program has {len(names)} ({', '.join(names)})")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0])
    return [int(d) if str(d).lstrip("-").isdigit() else str(d) for d in node.meta["val"].shape]


class TorchModel(CompiledModel):
    def __init__(self, path: Path, target: Target, shape: tuple[int, ...] | None, trust: bool,
                 allow_globals: tuple[str, ...] = ()) -> None:
        import torch

        from ..models.checkpoint import LoadPolicy, load_exported_program

        program = load_exported_program(path, policy=LoadPolicy(trust=trust, allow_globals=allow_globals))
        torch.set_num_threads(target.threads)
        dims = program_input_dims(program)
        if shape is None:
            shape = tuple(1 if i == 0 and isinstance(d, str) else d for i, d in enumerate(dims))
            if any(isinstance(d, str) for d in shape):
                raise InputError(f"{path}: input has dynamic dims ({'x'.join(map(str, dims))}); pass --shape")
        elif len(shape) != len(dims):
            raise InputError(f"{path}: --shape has rank {len(shape)}; the program's input has rank {len(dims)}")
        self.inputs = [GraphInput(program.graph_signature.user_inputs[0], "float32", tuple(dims))]
        self.input_shapes = {self.inputs[0].name: tuple(shape)}
        self._device = torch.device("cuda" if target.device.upper() == "CUDA" else "cpu")
        self._module = program.module().to(self._device)
        self._compiled = target.torch_compile
        if self._compiled:
            self._module = torch.compile(self._module)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._module(torch.from_numpy(x).to(self._device))
        if self._device.type == "cuda":
            torch.cuda.synchronize()
        return out.cpu().numpy()

    def settings(self) -> dict[str, Any]:
        import torch

        return {"torch": torch.__version__, "device": str(self._device), "num_threads": torch.get_num_threads(),
                "torch_compile": self._compiled, "batch": self.input_shape[0]}

    def precision(self, variant_precision: str) -> str:
        return variant_precision

    def int8_layers(self) -> dict[str, Any]:
        return {"int8": 0, "total": None, "note": "torch runs the float graph"}


class TorchTarget(Target):
    """A torch target's own keys."""

    torch_compile: bool = Field(False, description="torch: run the program through torch.compile (else eager)")


class TorchBackend(Backend):
    name = "torch"
    pip_extra = ""
    file_suffix = ".pt2"
    target_model = TorchTarget
    capabilities = Capabilities(devices=("CPU", "CUDA"))

    def availability(self) -> tuple[bool, str]:
        try:
            import torch
        except ImportError as exc:
            return False, f"torch is not installed ({exc})"
        return True, f"{torch.__version__} (cuda: {'yes' if torch.cuda.is_available() else 'no'})"

    def compile(self, onnx_path: Path, target: Target, shape: ShapeRequest = None) -> CompiledModel:
        import torch

        if target.device.upper() == "CUDA" and not torch.cuda.is_available():
            raise BackendUnavailable(f"target {target.name}: device CUDA asked but torch sees no CUDA GPU")
        if target.torch_compile and target.device.upper() == "CPU" and cxx_compiler() is None:
            raise BackendUnavailable(f"target {target.name}: torch.compile on the CPU needs a C++ compiler "
                                     f"(g++ or clang++ on PATH, or $CXX); none found")
        if onnx_path.suffix != self.file_suffix:
            raise InputError(f"target {target.name}: the torch backend runs .pt2 (torch.export) files; got {onnx_path.name}")
        if isinstance(shape, dict):  # programs here take one input: a named shape is that input's
            if len(shape) != 1:
                raise InputError(f"target {target.name}: a torch program takes one input; got shapes for {', '.join(shape)}")
            shape = next(iter(shape.values()))
        return TorchModel(onnx_path, target, shape, self.trust_checkpoint, self.allow_globals)

    def native_command(self, onnx_path: Path, target: Target) -> str:
        """torch ships no benchmark tool of its own: edgekd's harness is the reference here."""
        return f"# torch has no native benchmark tool; time {onnx_path.name} with torch.utils.benchmark.Timer"
