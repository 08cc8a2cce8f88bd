"""ONNX Runtime: the CPU execution provider with the target's intra/inter-op threads and spinning, and
the CUDA and TensorRT execution providers where the installed build has them (``device: CUDA`` or
``device: TensorRT``; onnxruntime-gpu), each falling back to CPU for the ops it lacks."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pydantic import Field

from ..errors import BackendError, BackendUnavailable, first_line
from ..progress import runtime_log_severity
from .base import Backend, Capabilities, CompiledModel
from .inputs import ShapeRequest, graph_inputs, reshaped_onnx, resolve_shapes
from ..config.target import Target

PROVIDERS = {"CPU": ["CPUExecutionProvider"],
             "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "TENSORRT": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}

INT8_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat"}  # the last: INT8 inputs, float output (a matmul with no Q after it)
FLOAT_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def session_options(target: Target) -> Any:
    """The target's threading as ORT session options (also what ``--emit-native`` translates)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = target.threads
    opts.inter_op_num_threads = target.inter_op_threads
    opts.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if target.inter_op_threads == 1
                           else ort.ExecutionMode.ORT_PARALLEL)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = runtime_log_severity()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if target.spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if target.spinning else "0")
    return opts


class OrtModel(CompiledModel):
    def __init__(self, path: Path, target: Target, shapes: dict[str, tuple[int, ...]], reshape: bool) -> None:
        import onnxruntime as ort

        self._path, self._target = path, target
        self._opts = session_options(target)
        providers = PROVIDERS[target.device.upper()]
        # ORT takes dynamic axes as they come: a re-declared file only for a batch-1 export run at batch N
        source = reshaped_onnx(path, shapes) if reshape and _static_dims_change(path, shapes) else str(path)
        try:
            self._sess = ort.InferenceSession(source, self._opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BackendError(f"onnxruntime could not load {path.name}: {first_line(exc)}") from None
        self.inputs = graph_inputs(path)
        self.input_shapes = dict(shapes)
        self._input = self.inputs[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._input: x})[0]

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._sess.run(None, feed)[0]

    def settings(self) -> dict[str, Any]:
        import onnxruntime as ort

        cfg = self._sess.get_session_options()
        return {"onnxruntime": ort.__version__, "providers": self._sess.get_providers(),
                "intra_op_num_threads": cfg.intra_op_num_threads, "inter_op_num_threads": cfg.inter_op_num_threads,
                "execution_mode": str(cfg.execution_mode), "graph_optimization_level": str(cfg.graph_optimization_level),
                "allow_spinning": cfg.get_session_config_entry("session.intra_op.allow_spinning") == "1",
                "batch": self.input_shape[0], "input_shapes": {n: list(v) for n, v in self.input_shapes.items()}}

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
            optimized = onnx.load(opts.optimized_model_filepath).graph
        ops = Counter(n.op_type for n in optimized.node)
        int8 = sum(v for k, v in ops.items() if k in INT8_OPS)
        total = int8 + sum(v for k, v in ops.items() if k in FLOAT_OPS)
        result = {"int8": int8, "total": total, "ops": {k: v for k, v in ops.items() if k in INT8_OPS | FLOAT_OPS},
                  "all_ops": dict(ops)}  # every op ORT runs: what two INT8 files of one model differ by
        if int8:  # a QDQ file: say why each layer ORT left in float was not fused
            floats = [n.name for n in optimized.node if n.op_type in FLOAT_OPS]
            result["float_layers"] = float_layer_causes(onnx.load(str(self._path)).graph, floats)
        if int8 and (warning := saturation_risk(self._path)):
            result["warning"] = warning
        return result


class OnnxRuntimeTarget(Target):
    """An ONNX Runtime target's own keys."""

    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads (sequential execution: 1)")
    spinning: bool = Field(True, description="onnxruntime: worker threads spin between ops (its default)")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    pip_extra = ""
    target_model = OnnxRuntimeTarget
    capabilities = Capabilities(devices=("CPU", "CUDA", "TENSORRT"),
                                # transformers: the dynamic layout where written (export writes it for text models)
                                int8_layouts=(("CPU", "dynamic"), ("CPU", "u8s8"), ("CUDA", "u8s8")), hardswish="split")

    def availability(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return False, (f"onnxruntime is not installed ({exc}): pip install 'edgekd[onnxruntime]', or "
                           f"'edgekd[onnxruntime-gpu]' for CUDA")
        return True, f"{ort.__version__} (providers: {', '.join(ort.get_available_providers())})"

    def compile(self, onnx_path: Path, target: Target, shape: ShapeRequest = None) -> CompiledModel:
        import onnxruntime as ort

        wanted = PROVIDERS[target.device.upper()][0]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(f"target {target.name}: this onnxruntime build has no {wanted} "
                                     f"(has {', '.join(ort.get_available_providers())}; device {target.device} "
                                     f"needs onnxruntime-gpu and an NVIDIA GPU)")
        return OrtModel(onnx_path, target, *resolve_shapes(onnx_path, shape))

    def native_command(self, onnx_path: Path, target: Target) -> str:
        """onnxruntime_perf_test (built from the ONNX Runtime sources; not in the wheel)."""
        ep = {"CPU": "cpu", "CUDA": "cuda", "TENSORRT": "tensorrt"}[target.device.upper()]
        spec = target.latency
        return (f"onnxruntime_perf_test -e {ep} -x {target.threads} -y {target.inter_op_threads} "
                f"{'' if target.inter_op_threads == 1 else '-P '}-m times -r {spec.runs} -I -o 99 "
                f"-C 'session.intra_op.allow_spinning|{1 if target.spinning else 0}' {onnx_path}")


def _static_dims_change(path: Path, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether a shape asked for differs from a fixed dim the file declares (symbolic dims ORT binds
    at run time)."""
    return any(isinstance(d, int) and d > 0 and d != want
               for i in graph_inputs(path) for d, want in zip(i.dims, shapes.get(i.name, i.dims)))


def float_layer_causes(graph: Any, names: list[str]) -> dict[str, str]:
    """Layer name -> why ONNX Runtime's QDQ fusion (``DQ -> op -> Q``, equal activation types) left it in
    float, read off the file's own graph; names ORT made up for fused nodes are matched by prefix."""
    from ..artifacts.qdq_rules import links, shared_requantizer, unfolded_clamp

    producer, readers = links(graph)
    zero_type = {i.name: i.data_type for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}

    def activation_type(qdq: Any) -> str:
        code = zero_type.get(qdq.input[2]) if len(qdq.input) > 2 else None
        return {2: "uint8", 3: "int8"}.get(code, "?")

    causes = {}
    for name in names:
        node = by_name.get(name) or next((n for k, n in by_name.items() if name.startswith(k) and k), None)
        if node is None:
            causes[name] = "not in the file (made by ORT's optimizer)"
            continue
        source = producer.get(node.input[0])
        after = readers.get(node.output[0], [])
        quants = [n for n in after if n.op_type == "QuantizeLinear"]
        if not quants and len(after) == 1 and after[0].op_type in ("Relu", "Clip"):  # a clamp ORT may fold
            quants = [n for n in readers.get(after[0].output[0], []) if n.op_type == "QuantizeLinear"]
        if source is None or source.op_type != "DequantizeLinear":
            causes[name] = f"its input comes from {source.op_type if source else 'the graph input'} in float, not a DequantizeLinear"
        elif shared_requantizer(producer, readers, node.input[0]):
            causes[name] = ("its input DequantizeLinear ends a requantizer chain other ops read too: ORT merges the "
                            "chain into one DQ they share, and fuses no op whose DQ has another reader")
        elif (clamp := unfolded_clamp(graph, readers, node)) is not None:
            causes[name] = (f"a {clamp.op_type} before its QuantizeLinear that ORT cannot fold: that quantizer's "
                            f"range does not lie within the {clamp.op_type}'s bounds")
        elif not quants:
            chain = ", ".join(sorted({n.op_type for n in after})) or "the graph output"
            causes[name] = f"its output goes to {chain} with no QuantizeLinear right after it"
        elif activation_type(source) != activation_type(quants[0]):
            causes[name] = (f"{activation_type(source)} input but {activation_type(quants[0])} output: ORT fuses only "
                            f"equal activation types (use the u8s8 layout)")
        else:
            causes[name] = "left in float by ORT's fusions"
    return causes


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
