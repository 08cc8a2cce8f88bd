"""ONNX Runtime, CPU execution provider, with a fixed thread count and sequential execution."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Target
from ..errors import BackendError
from .base import Backend, CompiledModel

INT8_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul"}
FLOAT_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


class OrtModel(CompiledModel):
    def __init__(self, path: Path, target: Target) -> None:
        import onnxruntime as ort

        self._path, self._target = path, target
        self._opts = ort.SessionOptions()
        self._opts.intra_op_num_threads = target.threads
        self._opts.inter_op_num_threads = 1
        self._opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._sess = ort.InferenceSession(str(path), self._opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BackendError(f"onnxruntime could not load {path.name}: {str(exc).splitlines()[0]}") from None
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._input: x})[0]

    def settings(self) -> dict[str, Any]:
        import onnxruntime as ort

        cfg = self._sess.get_session_options()
        return {"onnxruntime": ort.__version__, "providers": self._sess.get_providers(),
                "intra_op_num_threads": cfg.intra_op_num_threads, "inter_op_num_threads": cfg.inter_op_num_threads,
                "execution_mode": str(cfg.execution_mode), "graph_optimization_level": str(cfg.graph_optimization_level)}

    def precision(self, variant_precision: str) -> str:
        return variant_precision

    def int8_layers(self) -> dict[str, Any]:
        """Count ops in the graph ORT actually runs (a throwaway session writes it out)."""
        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = self._opts.graph_optimization_level
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            opts.log_severity_level = 3
            ort.InferenceSession(str(self._path), opts, providers=["CPUExecutionProvider"])
            ops = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
        int8 = sum(v for k, v in ops.items() if k in INT8_OPS)
        total = int8 + sum(v for k, v in ops.items() if k in FLOAT_OPS)
        result = {"int8": int8, "total": total, "ops": {k: v for k, v in ops.items() if k in INT8_OPS | FLOAT_OPS}}
        if int8 and (warning := saturation_risk(self._path)):
            result["warning"] = warning
        return result


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    pip_extra = ""
    devices = ("CPU",)

    def availability(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return False, f"onnxruntime is not installed ({exc})"
        return True, ort.__version__

    def compile(self, onnx_path: Path, target: Target) -> CompiledModel:
        if target.device.upper() != "CPU":
            raise BackendError(f"target {target.name}: onnxruntime device {target.device!r}; valid: CPU")
        return OrtModel(onnx_path, target)


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has an int8 dot-product instruction (VNNI / AMX); None if unknown."""
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return None
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def saturation_risk(path: Path) -> str | None:
    """A warning when INT8 weights use the full 8 bits and this CPU's kernels sum pairs in int16."""
    import onnx
    from onnx import numpy_helper

    if cpu_has_vnni() is not False:
        return None
    graph = onnx.load(str(path)).graph
    wide = any(init.data_type == onnx.TensorProto.INT8 and
               (lambda a: a.size and (a.min() < -64 or a.max() > 63))(numpy_helper.to_array(init))
               for init in graph.initializer)
    if not wide:
        return None
    return ("this CPU has no VNNI: ONNX Runtime's u8 x s8 kernels can saturate with full-range INT8 weights; "
            "quantize with 'reduce_range: true' if accuracy drops here")
