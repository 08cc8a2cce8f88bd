"""Backends by name. Importing this costs nothing: runtimes load inside each backend's methods."""

from ..errors import TargetError
from ..registry import Registry
from .base import Backend, CompiledModel, evaluate_accuracy, predict
from .onnxruntime import OnnxRuntimeBackend
from .openvino import OpenVINOBackend
from .tensorrt import TensorRTBackend
from .torch_eager import TorchBackend

BACKENDS: Registry[type[Backend]] = Registry("backend", TargetError)
for _cls in (OnnxRuntimeBackend, OpenVINOBackend, TensorRTBackend, TorchBackend):
    BACKENDS.register(_cls.name)(_cls)

__all__ = ["BACKENDS", "Backend", "CompiledModel", "evaluate_accuracy", "predict"]
