"""TensorRT: builds an engine from the (QDQ) ONNX file and runs it on an NVIDIA GPU.

Written against the TensorRT 10 Python API (``tensorrt`` wheel, ``pip install 'edgekd[tensorrt]'``);
device buffers are torch CUDA tensors, so no pycuda is needed. On a machine without the wheel or a
GPU, ``availability`` says why and every result for a TensorRT target is ``unavailable``.

- Precision (target ``precision``): ``fp32`` builds plain FP32 kernels, ``fp16`` allows FP16 kernels,
  ``int8`` also allows INT8. Quantization is explicit: a QDQ graph sets its own INT8 layers and scales
  (no calibrator), so a QDQ file needs an ``int8`` target and is refused on the others.
- Caches under ``$EDGEKD_CACHE/tensorrt``: the built engine, keyed by the file's SHA-256, the build
  settings, the TensorRT version and the GPU (a rebuild takes seconds to minutes and is the same
  engine), and the timing cache per GPU and version, so even a new engine's tactic search is quick.
- Latency: the harness times the host's view of one call (input copy, enqueue, synchronise, output
  copy); CUDA events around the enqueue record the GPU-compute time apart (``device_times_ms``),
  as trtexec reports "Host Latency" and "GPU Compute Time" apart.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pydantic import Field

from ..errors import BackendError, BackendUnavailable
from ..fileio import write_bytes, write_json
from .base import Backend, Capabilities, CompiledModel
from .inputs import ShapeRequest, graph_inputs, reshaped_onnx, resolve_shapes
from ..config.target import Target

COMPUTE_LAYER_WORDS = ("Convolution", "Gemm", "MatrixMultiply", "FullyConnected")


def _cache_dir() -> Path:
    from ..fileio import cache_dir

    return cache_dir() / "tensorrt"


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def engine_key(onnx_bytes: bytes, target: Target) -> str:
    """What an engine is valid for: the file, the build settings, TensorRT's version and the GPU."""
    import tensorrt as trt

    settings = {"precision": target.precision, "workspace_mb": target.workspace_mb,
                "tensorrt": trt.__version__, "gpu": _gpu_name()}
    digest = hashlib.sha256(onnx_bytes)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def build_engine(onnx_bytes: bytes, name: str, target: Target, logger: Any) -> tuple[bytes, bool]:
    """(serialized engine, whether the graph is quantized), with the timing cache read and updated."""
    import tensorrt as trt

    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"tensorrt could not parse {name}: {errors}")
    quantized = any(network.get_layer(i).type == trt.LayerType.QUANTIZE for i in range(network.num_layers))
    if quantized and target.precision != "int8":
        raise BackendError(f"target {target.name}: {name} is quantized (QDQ) but the target's precision is "
                           f"{target.precision}; valid for a QDQ file: int8")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, target.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions for int8_layers
    if target.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if target.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    timing_path = _cache_dir() / f"timing-{hashlib.sha256((trt.__version__ + _gpu_name()).encode()).hexdigest()[:16]}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"tensorrt could not build an engine for {name} (precision {target.precision})")
    write_bytes(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan)), quantized


class TrtModel(CompiledModel):
    def __init__(self, path: Path, target: Target, shapes: dict[str, tuple[int, ...]], reshape: bool) -> None:
        import tensorrt as trt
        import torch

        logger = trt.Logger(trt.Logger.WARNING)
        onnx_bytes = reshaped_onnx(path, shapes) if reshape else path.read_bytes()
        engine_path = _cache_dir() / f"{path.stem}-{engine_key(onnx_bytes, target)}.engine"
        self.engine_cached = target.cache and engine_path.is_file() and engine_path.with_suffix(".json").is_file()
        if self.engine_cached:
            plan = engine_path.read_bytes()
            self._quantized = json.loads(engine_path.with_suffix(".json").read_text())["quantized"]
        else:
            plan, self._quantized = build_engine(onnx_bytes, path.name, target, logger)
            if target.cache:
                write_json(engine_path.with_suffix(".json"), {"quantized": self._quantized})
                write_bytes(engine_path, plan)
        self._target = target
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendError(f"tensorrt could not load the engine for {path.name} ({engine_path})")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        torch_types = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                       trt.DataType.INT64: torch.int64, trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool}
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        in_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        for n in [*in_names, self._output]:
            if torch_types.get(self._engine.get_tensor_dtype(n)) is None or (
                    n == self._output and self._engine.get_tensor_dtype(n) != trt.DataType.FLOAT):
                raise BackendError(f"tensorrt: {path.name} tensor {n!r} is {self._engine.get_tensor_dtype(n)}; "
                                   f"edgekd feeds float/int/bool inputs and reads a float32 output")
        self.inputs = graph_inputs(path)
        self.input_shapes = {n: tuple(self._engine.get_tensor_shape(n)) for n in in_names}
        self._ins = {n: torch.empty(self.input_shapes[n], dtype=torch_types[self._engine.get_tensor_dtype(n)],
                                    device="cuda") for n in in_names}
        self._out = torch.empty(tuple(self._engine.get_tensor_shape(self._output)), dtype=torch.float32, device="cuda")
        self._host_out = torch.empty(self._out.shape, dtype=torch.float32).pin_memory()
        for n, tensor in self._ins.items():
            self._context.set_tensor_address(n, tensor.data_ptr())
        self._context.set_tensor_address(self._output, self._out.data_ptr())
        self._events: list[tuple[Any, Any]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run({self.inputs[0].name: x})

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.cuda.stream(self._stream):
            for name, array in feed.items():
                self._ins[name].copy_(torch.from_numpy(np.ascontiguousarray(array)), non_blocking=False)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendError("tensorrt: execute_async_v3 failed")
            end.record(self._stream)
            self._host_out.copy_(self._out, non_blocking=True)
        self._stream.synchronize()
        self._events.append((start, end))
        return self._host_out.numpy()

    def device_times_ms(self) -> list[float] | None:
        return [start.elapsed_time(end) for start, end in self._events]

    def reset_device_times(self) -> None:
        self._events.clear()

    def settings(self) -> dict[str, Any]:
        import tensorrt as trt

        return {"tensorrt": trt.__version__, "gpu": _gpu_name(), "precision": self._target.precision,
                "quantized": self._quantized, "workspace_mb": self._target.workspace_mb,
                "engine_cached": self.engine_cached, "batch": self.input_shape[0]}

    def precision(self, variant_precision: str) -> str:
        return "int8" if self._quantized else self._target.precision

    def int8_layers(self) -> dict[str, Any]:
        """Per-layer precision from the engine inspector (built with detailed profiling verbosity)."""
        import tensorrt as trt

        info = json.loads(self._engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        layers: dict[str, str] = {}
        for layer in info.get("Layers", []):
            if isinstance(layer, dict) and any(w in str(layer.get("LayerType", "")) for w in COMPUTE_LAYER_WORDS):
                formats = " ".join(str(i.get("Format/Datatype", "")) for i in layer.get("Inputs", []))
                layers[str(layer.get("Name"))] = "int8" if "Int8" in formats else ("fp16" if "Half" in formats else "fp32")
        return {"int8": sum(p == "int8" for p in layers.values()), "total": len(layers), "layers": layers}


class TensorRTTarget(Target):
    """A TensorRT target's own keys."""

    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="TensorRT: fp16 enables FP16 kernels; int8 also runs a QDQ graph's INT8 layers")
    workspace_mb: int = Field(1024, ge=16, description="TensorRT builder workspace")
    cache: bool = Field(True, description="TensorRT engine cache under $EDGEKD_CACHE")


class TensorRTBackend(Backend):
    name = "tensorrt"
    pip_extra = "tensorrt"
    target_model = TensorRTTarget
    capabilities = Capabilities(devices=("GPU",),
                                precisions=("fp32", "fp16", "int8"), int8_input="signed")

    def availability(self) -> tuple[bool, str]:
        try:
            import tensorrt as trt
        except ImportError:
            return False, "the tensorrt package is not installed (pip install 'edgekd[tensorrt]'; needs an NVIDIA GPU)"
        import torch

        if not torch.cuda.is_available():
            return False, f"tensorrt {trt.__version__} is installed but no CUDA GPU is visible to torch"
        return True, trt.__version__

    def compile(self, onnx_path: Path, target: Target, shape: ShapeRequest = None) -> CompiledModel:
        ok, reason = self.availability()
        if not ok:
            raise BackendUnavailable(reason)
        return TrtModel(onnx_path, target, *resolve_shapes(onnx_path, shape))

    def native_command(self, onnx_path: Path, target: Target) -> str:
        """trtexec with the same precision, workspace and timing as edgekd's harness."""
        spec = target.latency
        flags = {"fp32": "", "fp16": " --fp16", "int8": " --fp16 --int8"}[target.precision]
        return (f"trtexec --onnx={onnx_path}{flags} --memPoolSize=workspace:{target.workspace_mb}M "
                f"--warmUp={int(spec.warmup_seconds * 1000)} --iterations={spec.runs} "
                f"--duration={max(1, round(spec.min_seconds))} --useSpinWait "
                f"--timingCacheFile={_cache_dir() / 'trtexec.timing.cache'}")
