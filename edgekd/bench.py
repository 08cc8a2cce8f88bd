"""The latency harness every backend shares (DESIGN.md "Numbers everyone relies on").

Warm-up by count *and* time, then timed runs by count and (optionally) time; one synchronous call
per sample timed with ``perf_counter_ns``; garbage collection off while timing; inputs seeded and
preallocated by the caller. Backends only supply the call.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from .config import LatencySpec


@dataclass(frozen=True)
class LatencyStats:
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    cov: float
    min: float
    max: float
    runs: int
    warmup_runs: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def seeded_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random, seeded, never-zero input: zeros can take fast paths real data does not."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def measure_latency(call: Callable[[], Any], spec: LatencySpec) -> LatencyStats:
    warm = 0
    start = time.perf_counter()
    while warm < spec.warmup_runs or time.perf_counter() - start < spec.warmup_seconds:
        call()
        warm += 1
    times_ns: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        begin = time.perf_counter()
        while len(times_ns) < spec.runs or time.perf_counter() - begin < spec.min_seconds:
            t0 = time.perf_counter_ns()
            call()
            times_ns.append(time.perf_counter_ns() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return LatencyStats(p50=p50, p90=p90, p99=p99, mean=mean, std=std, cov=std / mean if mean else 0.0,
                        min=float(ms.min()), max=float(ms.max()), runs=len(ms), warmup_runs=warm)
