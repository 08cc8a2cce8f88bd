"""``edgekd report``."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, handle_errors, out


class Format(str, enum.Enum):
    md = "md"
    html = "html"
    json = "json"


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory made by 'edgekd compress'.")],
    fmt: Annotated[Format, typer.Option("--format", help="What to print: md (tables), html (writes "
                   "report.html and prints its path) or json.")] = Format.md,
) -> None:
    """Re-render report.json/.md/.html and tradeoff.png from a run directory's files only."""
    from ..report.build import write_report

    with handle_errors():
        if not run_dir.is_dir():
            from ..errors import ReportError

            raise ReportError(f"{run_dir}: run directory not found")
        data = write_report(run_dir)
    if fmt is Format.json:
        print(json.dumps(data, indent=2))
    elif fmt is Format.html:
        out.print(str(run_dir / "report.html"))
    else:
        print((run_dir / "report.md").read_text(encoding="utf-8"), end="")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="The first run directory (e.g. main's).")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="The second run directory (e.g. the change's).")],
    json_path: Annotated[Optional[Path], typer.Option("--json", "-j", metavar="FILE", help="Also write the "
                         "comparison here as JSON (units in the keys: size_mb, p50_ms).")] = None,
    min_effect: Annotated[float, typer.Option(min=0.0, help="The smallest p50 slowdown that counts as a "
                          "regression (0.05: 5%), same machine only.")] = 0.05,
    accuracy_tolerance: Annotated[float, typer.Option(min=0.0, help="Allowed absolute accuracy drop.")] = 0.005,
    size_tolerance: Annotated[float, typer.Option(min=0.0, help="Allowed relative size growth.")] = 0.01,
) -> None:
    """Print two runs side by side: size, accuracy and p50 per variant x target, and B / A. Exit 1 when
    B regressed (failed, less accurate, larger or slower than A beyond the tolerances), else 0."""
    from ..progress import for_terminal
    from rich.table import Table

    from ..fileio import write_json
    from ..report.baseline import Tolerances
    from ..report.compare import compare_rows, comparison_document
    from ..report.build import load_report

    tol = Tolerances(min_effect=min_effect, accuracy_drop=accuracy_tolerance, size_growth=size_tolerance)
    with handle_errors():
        rows = compare_rows(load_report(run_a), load_report(run_b), tol)
        if json_path is not None:
            write_json(json_path, comparison_document(rows, str(run_a), str(run_b), tol))
    table = Table(title=for_terminal(f"A: {run_a}   B: {run_b}"), title_justify="left")
    for h in ("variant", "target", "size A MB", "size B MB", "acc A", "acc B", "p50 A ms", "p50 B ms", "B/A p50",
              "B worse", "note"):
        table.add_column(h, justify="left" if h in ("variant", "target", "B worse", "note") else "right")

    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in rows:
        note = [] if r["same_machine"] else ["measured on different machines: p50 not judged"]
        note += [f"{side}: {r['status_' + side.lower()]}" for side in ("A", "B") if r["status_" + side.lower()] != "ok"]
        table.add_row(for_terminal(r["variant"]), for_terminal(r["target"]), f(r["size_mb_a"], ".3f"),
                      f(r["size_mb_b"], ".3f"), f(r["accuracy_a"], ".4f"), f(r["accuracy_b"], ".4f"),
                      f(r["p50_ms_a"], ".3f"), f(r["p50_ms_b"], ".3f"), f(r["p50_ratio"], ".3f"),
                      for_terminal("; ".join(r["regressions"]) or "-"), for_terminal("; ".join(note)))
    out.print(table)
    regressed = [r for r in rows if r["regressions"]]
    out.print(f"B regressed on {len(regressed)} of {len(rows)} rows" if regressed else "B did not regress")
    raise typer.Exit(1 if regressed else 0)
