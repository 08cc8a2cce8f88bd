"""Whether an INT8 row is usable on its target: ``ok`` only if the runtime really runs it in INT8 and it
is faster than the FP32 file it came from.

An INT8 file a runtime executes mostly in float, or one slower than FP32, is of no use on that target;
reporting it as ``ok`` beside a "MOSTLY FLOAT" note is how a 7 ms INT8 mobilenet_v3_small (0.93 ms in
FP32) once passed. Such a row is ``failed`` with the measured numbers kept and the reason in ``error``,
so ``gate`` fails every budget line on it.

Speed is judged on a ratio timed *interleaved* (FP32 and INT8 take turns of a few calls), not on two p50s
measured minutes apart: on a shared 2-core machine the same file's p50 moved 2.5 -> 6.4 ms between
two windows, while an interleaved ratio moves a few percent. A few percent is still noise: a row is
failed only when the ratio's 95% interval lies wholly above the limit (a user's regnet INT8 file failed
at an interleaved 1.04 on a busy machine while its own p50 was the faster); an interval that straddles
the limit leaves the row ``ok`` with a warning that INT8 was not shown faster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from .latency import time_calls, warm_up

MOSTLY_FLOAT = 0.5     # below this fraction of INT8 conv/matmul layers the row is failed
MOSTLY_INT8 = 0.95     # below this (and above MOSTLY_FLOAT) the float layers are a warning


def fp32_counterpart(variant: str, names: list[str]) -> str | None:
    """The FP32 variant an INT8 one is judged against: the same role (``student-int8`` ->
    ``student-fp32``), else ``teacher-fp32``; None when the run has neither."""
    role = variant.rsplit("-", 1)[0]
    for name in (f"{role}-fp32", "teacher-fp32"):
        if name in names and name != variant:
            return name
    return None


# calls per turn of one file in interleaved timing; the first of each turn is not kept (INTERLEAVE_BLOCK)
INTERLEAVE_BLOCK = 5


def interleaved_ratio(run_a: Callable[[], Any], run_b: Callable[[], Any], runs: int,
                      block: int = INTERLEAVE_BLOCK) -> dict[str, float]:
    """p50 of ``run_a`` / p50 of ``run_b``, the two taking turns of ``block`` calls (after a warm-up of
    each), so a co-tenant or a clock change hits both alike. The first call of each turn is not kept:
    the other session's worker threads are still spinning then (ONNX Runtime's default), and on a
    2-core machine a user's mnasnet0_75 INT8 file timed 7.05 ms against FP32's 4.48 with single
    alternating calls while its own p50, timed alone, was 2.80 against 3.00: the ratio measured the
    neighbour's spin, not the file. Dropping one call is not enough where pools spin long: callers compile
    both files without spinning (``measure.targets.versus_fp32``). ``runs`` calls of each are kept."""
    for call in (run_a, run_b):
        warm_up(call, 5, 0.1)
    a: list[float] = []
    b: list[float] = []
    dropped = 1 if block > 1 else 0
    while len(a) < runs:
        a += time_calls(run_a, block, 0.0)[dropped:]
        b += time_calls(run_b, block, 0.0)[dropped:]
    a, b = a[:runs], b[:runs]
    p50_a, p50_b = float(np.median(a)), float(np.median(b))
    lo, hi = paired_ratio_interval(np.asarray(a), np.asarray(b))
    return {"ratio": p50_a / p50_b, "ratio_low": lo, "ratio_high": hi, "p50_ms": p50_a, "fp32_p50_ms": p50_b,
            "pairs": len(a)}


RESAMPLES, BLOCKS = 2000, 10  # moving-block bootstrap of the interleaved pairs (blocks per series)


def paired_ratio_interval(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% interval of median(a) / median(b) for two series timed in turns: a moving-block bootstrap that
    draws the *same* blocks of both, so what hit both files at once (a co-tenant, a clock change) stays
    paired, and runs of slow calls stay together (as ``report.baseline`` resamples a baseline's calls)."""
    n = min(len(a), len(b))
    if n < 4:
        ratio = float(np.median(a) / np.median(b))
        return ratio, ratio
    rng = np.random.default_rng(seed)
    block = max(1, n // BLOCKS)
    starts = rng.integers(0, n - block + 1, size=(RESAMPLES, max(1, n // block)))
    picks = (starts[:, :, None] + np.arange(block)).reshape(RESAMPLES, -1)
    ratios = np.median(a[:n][picks], axis=1) / np.median(b[:n][picks], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def time_against_fp32(compile_file: Callable[[Path], Any], int8_path: Path, fp32_path: Path,
                      runs: int) -> dict[str, float]:
    """The INT8 file against its FP32 file on one target: both compiled, timed interleaved at batch 1."""
    from ..backends.inputs import feed_for

    int8, fp32 = compile_file(int8_path), compile_file(fp32_path)
    x = feed_for(int8, int8_path)  # the same arrays for both: the files take the same inputs
    return interleaved_ratio(lambda: int8.run(x), lambda: fp32.run(x), runs)


def judge(row: dict[str, Any], versus_fp32: dict[str, Any] | None, max_ratio: float | None) -> dict[str, Any]:
    """``row`` (an INT8 measurement) with its verdict: ``failed`` when its runtime runs it mostly in
    float, or when it is slower than ``max_ratio`` x its FP32 file; warnings for float layers left."""
    if row["status"] != "ok" or row.get("precision") != "int8":
        return row
    row = {**row, "warnings": list(row.get("warnings", []))}
    reasons = []
    layers = row.get("int8_layers") or {}
    total, int8 = layers.get("total") or 0, layers.get("int8") or 0
    floats = layers.get("float_layers") or {}
    listed = "; ".join(f"{name}: {why}" for name, why in list(floats.items())[:5])
    if total and int8 < MOSTLY_FLOAT * total:
        reasons.append(f"runs mostly in float on {row['backend']}: {int8}/{total} conv/matmul layers INT8"
                       + (f" (float: {listed})" if listed else ""))
    elif total and int8 < MOSTLY_INT8 * total:
        row["warnings"].append(f"{total - int8} of {total} conv/matmul layers run in float"
                               + (f" ({listed})" if listed else ""))
    if versus_fp32 is not None:
        row["int8_vs_fp32"] = versus_fp32
        ratio = versus_fp32["ratio"]
        low, high = versus_fp32.get("ratio_low", ratio), versus_fp32.get("ratio_high", ratio)
        timed = (f"p50 {versus_fp32['p50_ms']:.3f} ms vs {versus_fp32['fp32_p50_ms']:.3f} ms timed interleaved "
                 f"(ratio {ratio:.2f}, 95% interval {low:.2f}-{high:.2f}")
        if max_ratio is not None and low > max_ratio:
            reasons.append(f"slower than its FP32 file on this target: {timed} > latency.int8_max_ratio {max_ratio})")
        elif max_ratio is not None and high > max_ratio:
            row["warnings"].append(f"INT8 not shown faster than its FP32 file here: {timed} includes "
                                   f"latency.int8_max_ratio {max_ratio}); re-measure on a quiet machine")
    if reasons:
        row.update(status="failed", error="not usable: " + "; ".join(reasons))
    return row
