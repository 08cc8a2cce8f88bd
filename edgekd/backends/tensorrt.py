"""TensorRT: builds an engine from the (QDQ) ONNX file and runs it on an NVIDIA GPU.

Written against the TensorRT 10 Python API (``tensorrt`` wheel, ``pip install 'edgekd[tensorrt]'``);
device buffers are torch CUDA tensors, so no pycuda is needed. On a machine without the wheel or a
GPU, ``availability`` says why and every result for a TensorRT target is ``unavailable``.
Explicit quantization: a QDQ graph sets its own INT8 layers; FP16 is enabled for the rest when
the target's ``device`` is ``GPU`` (TensorRT picks the faster kernel per layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import Target
from ..errors import BackendError, BackendUnavailable
from .base import Backend, CompiledModel


class TrtModel(CompiledModel):
    def __init__(self, path: Path, target: Target) -> None:
        import tensorrt as trt
        import torch

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"tensorrt could not parse {path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        self._quantized = any(network.get_layer(i).type == trt.LayerType.QUANTIZE for i in range(network.num_layers))
        if self._quantized:
            config.set_flag(trt.BuilderFlag.INT8)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError(f"tensorrt could not build an engine for {path.name}")
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_shape = tuple(self._engine.get_tensor_shape(self._input))
        self._in = torch.empty(self.input_shape, dtype=torch.float32, device="cuda")
        self._out = torch.empty(tuple(self._engine.get_tensor_shape(self._output)), dtype=torch.float32, device="cuda")
        self._context.set_tensor_address(self._input, self._in.data_ptr())
        self._context.set_tensor_address(self._output, self._out.data_ptr())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._in.copy_(torch.from_numpy(x))
        self._context.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        return self._out.cpu().numpy()

    def settings(self) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "fp16": True,
                "int8": self._quantized}

    def precision(self, variant_precision: str) -> str:
        return "int8" if self._quantized else "fp16"

    def int8_layers(self) -> dict[str, Any]:
        return {"int8": None, "total": None, "note": "per-layer precision needs the engine inspector (issue 6)"}


class TensorRTBackend(Backend):
    name = "tensorrt"
    pip_extra = "tensorrt"
    devices = ("GPU",)

    def availability(self) -> tuple[bool, str]:
        try:
            import tensorrt as trt
        except ImportError:
            return False, "the tensorrt package is not installed (pip install 'edgekd[tensorrt]'; needs an NVIDIA GPU)"
        import torch

        if not torch.cuda.is_available():
            return False, f"tensorrt {trt.__version__} is installed but no CUDA GPU is visible to torch"
        return True, trt.__version__

    def compile(self, onnx_path: Path, target: Target) -> CompiledModel:
        ok, reason = self.availability()
        if not ok:
            raise BackendUnavailable(reason)
        return TrtModel(onnx_path, target)
