"""``edgekd gate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, err, handle_errors, out


@app.command()
def gate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its report.json).")],
    budget: Annotated[Path, typer.Option(help="Budget YAML: variant, max_size_mb, max_accuracy_drop, "
                      "min_accuracy, max_latency_ms.")],
    junit: Annotated[Optional[Path], typer.Option(help="Write a JUnit XML file, one testcase per budget line.")] = None,
) -> None:
    """Check a run against a budget. Exit 0: every budget met; 1: a budget violated; 2: bad input."""
    from ..config import load_budget
    from ..gate import append_step_summary, ci_annotations, evaluate_budget, exit_code, write_junit
    from ..report import load_report

    with handle_errors():
        budget_obj = load_budget(budget)
        verdicts = evaluate_budget(load_report(run_dir), budget_obj)
        if junit is not None:
            write_junit(verdicts, budget_obj.variant, junit)
    for v in verdicts:
        (out if v.passed else err).print(f"{'PASS' if v.passed else 'FAIL'} {v.name}: {v.message}", highlight=False)
    for line in ci_annotations(verdicts):
        print(line)
    with handle_errors():
        append_step_summary(verdicts, str(run_dir))
    code = exit_code(verdicts)
    out.print(f"{len(verdicts) - sum(not v.passed for v in verdicts)}/{len(verdicts)} budget lines met")
    raise typer.Exit(code)
