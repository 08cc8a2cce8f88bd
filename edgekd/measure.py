"""One measurement: a file on a target -> latency, accuracy on that backend, what really ran.

Never raises for a backend's failure: the result carries ``status`` ``ok``, ``failed`` (with the
error) or ``unavailable`` (with the reason), so one broken target does not hide the others.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backends import BACKENDS, Backend, predict
from .parity import parity
from .bench import measure_latency, seeded_input
from .config import Target
from .errors import BackendUnavailable, EdgekdError


class BackendPool:
    """One backend instance per name for a whole run (OpenVINO's Core is costly to create)."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}

    def get(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = BACKENDS.get(name)()
        return self._backends[name]


def measure(onnx_path: Path, variant: str, precision: str, target: Target, pool: BackendPool,
            x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
            reference: np.ndarray | None = None) -> dict[str, Any]:
    """Latency, and with data accuracy; with ``reference`` (the torch model's logits on ``x_eval``) also
    the parity of this backend's outputs with it: how the runtime's own kernels change the result."""
    backend = pool.get(target.backend)
    result: dict[str, Any] = {"variant": variant, "target": target.name, "backend": target.backend,
                              "device": target.device, "precision": precision, "status": "ok",
                              "latency_ms": None, "throughput_ips": None, "accuracy": None, "error": None,
                              "onnx": str(onnx_path), "host": platform.node(), "cpu": platform.processor()}
    ok, why = backend.availability()
    if not ok:
        return {**result, "status": "unavailable", "error": why}
    try:
        compiled = backend.compile(onnx_path, target)
        x = seeded_input(compiled.input_shape)
        stats = measure_latency(lambda: compiled(x), target.latency)
        result.update(
            precision=compiled.precision(precision),
            latency_ms=stats.to_json(),
            throughput_ips=1000.0 / stats.mean if stats.mean else None,
            settings=compiled.settings(),
            int8_layers=compiled.int8_layers(),
        )
        if x_eval is not None and y_eval is not None:
            logits = predict(compiled, x_eval)
            result["accuracy"] = float(np.mean(logits.argmax(1) == y_eval))
            result["eval_samples"] = int(len(x_eval))
            if reference is not None and reference.shape == logits.shape:
                result["parity"] = parity(reference, logits)
    except EdgekdError as exc:
        result.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a runtime's own error becomes a failed row, not a crash
        result.update(status="failed", error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    return result


def latency_probe(target: Target, pool: BackendPool) -> Callable[[Path], float]:
    """p50 milliseconds of an ONNX file on ``target``, timed by the same harness as every measurement.

    Handed to stages (latency-driven pruning) as a plain function, so they time candidates on the
    target's own runtime without ever holding a backend.
    """
    backend = pool.get(target.backend)
    ok, why = backend.availability()
    if not ok:
        raise BackendUnavailable(f"target {target.name}: backend {target.backend} is unavailable ({why})")

    def p50_ms(path: Path) -> float:
        compiled = backend.compile(path, target)
        x = seeded_input(compiled.input_shape)
        return measure_latency(lambda: compiled(x), target.latency).p50

    return p50_ms


def file_precision(onnx_path: Path) -> str:
    """``int8`` for a QDQ graph, else ``fp32``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return "int8" if any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in graph.node) else "fp32"


def bench(model: str | Path, targets: list[str], *, warmup: int | None = None,
          runs: int | None = None) -> list[dict[str, Any]]:
    """Latency of one ONNX file on each target (no accuracy: a bare file comes with no data)."""
    from .config import load_target
    from .errors import InputError

    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    if path.suffix != ".onnx":
        raise InputError(f"{path}: bench takes an exported .onnx file (run 'edgekd compress' to make one)")
    overrides = {k: v for k, v in (("warmup_runs", warmup), ("runs", runs)) if v is not None}
    resolved = []
    for name in targets:
        t = load_target(name)
        resolved.append(t.model_copy(update={"latency": t.latency.model_copy(update=overrides)}) if overrides else t)
    precision = file_precision(path)
    pool = BackendPool()
    return [measure(path, path.stem, precision, t, pool) for t in resolved]
