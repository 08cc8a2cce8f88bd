"""A run's models measured on each of its targets: every variant's file (the layout its target's backend
runs best, or the torch program for the torch baseline) timed and scored on that backend, latency repeats
in rounds over the variants, and each INT8 row judged against its FP32 variant timed interleaved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts.artifact import Artifact
from ..backends import BACKENDS
from ..config.schema import Target
from ..data import Splits
from ..fileio import write_json
from ..fileio import checked_file_name
from ..progress import console
from .int8_verdict import fp32_counterpart, judge, time_against_fp32
from .measurement import BackendPool, Evaluation, InputShapes, add_repeats, empty_result, measure


def measure_models(run_dir: Path, models: dict[str, Artifact], targets: list[Target], splits: Splits,
                   pool: BackendPool) -> None:
    """Write ``measurements/<variant>@<target>.json`` for every model on every target."""
    def test_batches():
        return splits.arrays("test")

    seq = getattr(splits.preprocess, "max_length", None)  # text: latency at the recipe's sequence length
    for target in targets:
        results, files = {}, {}
        for name, art in models.items():
            console.print(f"measure {name} on {target.name} ({target.backend}, {target.device})")
            ref = art.meta.get("reference_logits")
            reference = np.load(ref) if ref and Path(ref).is_file() else None
            suffix = BACKENDS.get(target.backend).file_suffix  # the torch baseline runs the .pt2 program
            written = art.meta.get("layouts", {})
            onnx_file = next((written[k] for k in pool.get(target.backend).int8_layouts(target) if k in written), art.path)
            path = {".onnx": onnx_file, ".pt2": art.meta.get("program")}.get(suffix)
            if path is None:
                result = empty_result(name, art.precision, target, None, f"{name} has no {suffix} file "
                                                                         f"(torch programs are made for FP32 variants)")
            else:
                files[name] = run_dir / path
                result = measure(files[name], name, art.precision, target, pool,
                                 Evaluation(test_batches, splits.size("test"), reference, splits.scoring),
                                 InputShapes(seq=seq))
            results[name] = result
        if target.latency.repeats > 1:  # latency only, in rounds over the variants
            timed = [n for n in results if n in files]
            add_repeats([results[n] for n in timed], [[measure(files[n], n, results[n]["precision"], target, pool, inputs=InputShapes(seq=seq))
                                                       for n in timed] for _ in range(target.latency.repeats - 1)])
        for name, result in results.items():
            result = judge(result, versus_fp32(name, results, files, target, pool, seq), target.latency.int8_max_ratio)
            write_json(run_dir / "measurements" / checked_file_name(f"{name}@{target.name}.json", "measurement of"),
                       result)


def versus_fp32(name: str, results: dict[str, dict[str, Any]], files: dict[str, Path], target: Target,
                 pool: BackendPool, seq: int | None = None) -> dict[str, Any] | None:
    """An ok INT8 row's latency against its FP32 variant's file, timed interleaved on ``target``."""
    row = results[name]
    fp32 = fp32_counterpart(name, list(results))
    if row["status"] != "ok" or row["precision"] != "int8" or fp32 is None or results[fp32]["status"] != "ok":
        return None
    backend = pool.get(target.backend)
    console.print(f"time {name} against {fp32} on {target.name} (interleaved)")
    # two sessions taking turns on one machine: with spinning worker threads each session's pool keeps
    # spinning into the other's calls (ORT: mnasnet0_5 INT8/FP32 timed 0.53, 0.96, 0.87 in turns of 1, 5
    # and 20 calls, 0.93 alone); without spinning the turns give 0.90-0.94. The ratio is what is judged.
    quiet = target.with_options(spinning=False)
    try:
        from ..backends.inputs import resolve_shapes

        return time_against_fp32(lambda p: backend.compile(p, quiet, resolve_shapes(p, None, seq)[0] if seq else None),
                                 files[name], files[fp32],
                                 min(target.latency.runs, 100))
    except Exception as exc:  # noqa: BLE001 - the row's own measurement stands; say why no ratio
        row["warnings"].append(f"no interleaved INT8/FP32 timing ({type(exc).__name__}: {exc})")
        return None
