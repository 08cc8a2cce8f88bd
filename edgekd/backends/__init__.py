"""Backends by name. Importing this costs nothing: runtimes load inside each backend's methods."""

import os
from typing import Any

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

from pathlib import Path  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from ..config.schema import TARGETS_DIR, format_validation_error, read_yaml, resolve_file  # noqa: E402
from ..config.target import COMMON_TARGET_KEYS, Target  # noqa: E402


def checked_target(data: dict[str, Any]) -> Target:
    """A target validated as its backend's model (the common keys and that backend's options) and
    against its ``Capabilities`` (its devices and precisions). Raises pydantic's ValidationError or
    ValueError with a one-line reason."""
    backend = data.get("backend") if isinstance(data, dict) else None
    if isinstance(backend, str) and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS.names())}")
    cls = BACKENDS.get(backend) if isinstance(backend, str) else None
    if cls is not None:
        foreign = sorted(k for k in data if k not in cls.target_model.model_fields)
        others = {k for name in BACKENDS for k in BACKENDS.get(name).options()}
        if foreign and all(k in others for k in foreign):  # another backend's option: say whose keys apply
            keys = ", ".join(repr(k) for k in foreign)
            raise ValueError(f"{'key ' + keys + ' does' if len(foreign) == 1 else 'keys ' + keys + ' do'} not "
                             f"apply to backend '{backend}'; its keys: {', '.join(COMMON_TARGET_KEYS + cls.options())}")
    target = (cls.target_model if cls is not None else Target).model_validate(data)
    caps = BACKENDS.get(target.backend).capabilities
    if target.device.split(".")[0].upper() not in caps.devices:
        raise ValueError(f"device {target.device!r} is not supported by backend '{target.backend}'; "
                         f"valid: {', '.join(caps.devices)}")
    if "precision" in target.model_fields_set and getattr(target, "precision") not in caps.precisions:
        raise ValueError(f"precision {getattr(target, 'precision')!r} is not supported by backend "
                         f"'{target.backend}'; valid: {', '.join(caps.precisions)}")
    return target


def make_target(**keys: Any) -> Target:
    """A target from keyword arguments, as a target file would give them (its backend's model)."""
    return checked_target(keys)


def load_target(name_or_path: str | Path) -> Target:
    """A target file (or a built-in target's name), validated as a model and against its backend."""
    path = resolve_file(name_or_path, TARGETS_DIR, TargetError, "target")
    data = read_yaml(path, TargetError)
    try:
        return checked_target(data)
    except ValidationError as exc:
        backend = data.get("backend")
        model = BACKENDS.get(backend).target_model if isinstance(backend, str) and backend in BACKENDS else Target
        raise TargetError(format_validation_error(path, exc, model)) from None
    except ValueError as exc:
        raise TargetError(f"{path}: {exc}") from None


def check_runs_here(target: Target) -> Target:
    """Refuse (exit 2) a target that asks for more CPU threads than this machine has: ``threads: 100000``
    was accepted and measured an oversubscribed runtime. Checked when a target is about to run, not when
    it is listed (a built-in ARM target's 4 threads are right on its device)."""
    cpus = os.cpu_count() or 1
    if target.threads > cpus:
        raise TargetError(f"target {target.name}: threads {target.threads} exceeds the {cpus} CPUs of this machine; "
                          f"set threads to at most {cpus}")
    return target


__all__ = ["BACKENDS", "Backend", "CompiledModel", "Target", "check_runs_here", "checked_target", "evaluate_accuracy",
           "load_target", "make_target", "predict"]
