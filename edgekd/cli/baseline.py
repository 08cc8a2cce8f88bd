"""``edgekd baseline save``: the only command that writes a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, handle_errors, out

baseline_app = typer.Typer(help="Store what later runs are compared with (gate --baseline).", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("save")
def save(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A finished run directory (or its report.json).")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Where to write it. Default: "
                        "RUN_DIR/baseline.json.")] = None,
) -> None:
    """Save each variant x target's size, accuracy, latency statistics, timing samples and machine."""
    from ..report.baseline import save_baseline
    from ..report.build import load_report

    with handle_errors():
        report = load_report(run_dir)
        from ..artifacts.rundir import refuse_overwriting_a_run

        target = refuse_overwriting_a_run(out_file or (run_dir if run_dir.is_dir() else run_dir.parent)
                                          / "baseline.json", "--out")
        save_baseline(report, target)
    rows = sum(r["status"] == "ok" for r in report["results"])
    out.print(f"baseline: {rows} variant x target rows -> {target}", highlight=False)
