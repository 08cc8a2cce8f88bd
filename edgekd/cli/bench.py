"""``edgekd bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .app import app, handle_errors, out


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="An exported .onnx file.")],
    target: Annotated[Optional[list[str]], typer.Option(help="Target name or YAML path; repeat for several.")] = None,
    warmup: Annotated[Optional[int], typer.Option(min=1, help="Warm-up runs (overrides the target's).")] = None,
    runs: Annotated[Optional[int], typer.Option(min=1, help="Timed runs (overrides the target's).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the measurements here as JSON.")] = None,
) -> None:
    """Measure the latency of one ONNX file on each target (batch 1, seeded random input)."""
    from ..fileio import write_json
    from ..measure import bench as run_bench

    with handle_errors():
        results = run_bench(model, target or ["cpu-onnxruntime", "cpu-openvino"], warmup=warmup, runs=runs)
        if json_path is not None:
            write_json(json_path, results)
    table = Table(title=f"{model.name}", title_justify="left")
    for h in ("target", "precision", "p50 ms", "p90 ms", "p99 ms", "mean ms", "cov", "status"):
        table.add_column(h, justify="left" if h in ("target", "precision", "status") else "right")
    for r in results:
        lat = r["latency_ms"] or {}
        nums = [f"{lat[k]:.3f}" if k in lat else "-" for k in ("p50", "p90", "p99", "mean")]
        cov = f"{lat['cov']:.1%}" if "cov" in lat else "-"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        table.add_row(r["target"], r["precision"], *nums, cov, status)
    out.print(table)
    if any(r["status"] == "failed" for r in results):
        raise typer.Exit(1)
