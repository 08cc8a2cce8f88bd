"""``edgekd gate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, err, handle_errors, out


@app.command()
def gate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory (or its report.json).")],
    budget: Annotated[Optional[Path], typer.Option(
        "--budget", "-b", metavar="FILE", help="Budget YAML: variant, max_size_mb, max_accuracy_drop, "
                      "min_accuracy, max_latency_ms, max_latency_ratio, max_size_ratio, variants.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(
        "--baseline", metavar="FILE", help="A baseline from 'edgekd baseline save': fail on size "
                        "growth, accuracy drop, or latency slower beyond --min-effect and the measured noise.")] = None,
    min_effect: Annotated[float, typer.Option(min=0.0, help="Baseline: the smallest latency slowdown that fails "
                          "(0.05: 5%).")] = 0.05,
    accuracy_tolerance: Annotated[float, typer.Option(
        min=0.0, help="Baseline: allowed absolute accuracy drop.")] = 0.005,
    size_tolerance: Annotated[float, typer.Option(min=0.0, help="Baseline: allowed relative size growth.")] = 0.01,
    junit: Annotated[Optional[Path], typer.Option(
        "--junit", metavar="FILE", help="Write a JUnit XML file, one testcase per budget line.")] = None,
) -> None:
    """Check a run against a budget and/or a baseline. Exit 0: all met; 1: one violated; 2: bad input."""
    from ..report.baseline import Tolerances, compare_with_baseline, load_baseline
    from ..config.schema import load_budget
    from ..report.gate import (append_step_summary, ci_annotations, evaluate_budget, exit_code, record_verdicts,
                               write_junit)
    from ..errors import BudgetError
    from ..report.build import load_report

    with handle_errors():
        if budget is None and baseline is None:
            raise BudgetError("gate needs --budget FILE, --baseline FILE, or both")
        from ..artifacts.rundir import refuse_overwriting_a_run

        if junit is not None:
            refuse_overwriting_a_run(junit, "--junit")
        report = load_report(run_dir)
        budget_obj = load_budget(budget) if budget is not None else None
        verdicts = evaluate_budget(report, budget_obj) if budget_obj is not None else []
        notes: list[str] = []
        if baseline is not None:
            from ..report.baseline import provenance_notes

            base = load_baseline(baseline)
            verdicts += compare_with_baseline(report, base, Tolerances(min_effect, accuracy_tolerance, size_tolerance))
            notes = provenance_notes(report, base)
        if junit is not None:
            write_junit(verdicts, budget_obj.variant if budget_obj is not None else "baseline", junit)
        source = " ".join(["edgekd gate", *([f"--budget {budget}"] if budget else []),
                           *([f"--baseline {baseline}"] if baseline else [])])
        record_verdicts(run_dir if run_dir.is_dir() else run_dir.parent, verdicts, source)
    for note in notes:
        err.print(f"note: {note}", style="yellow")
    for v in verdicts:
        (out if v.passed else err).print(f"{'PASS' if v.passed else 'FAIL'} {v.name}: {v.message}")
    for line in ci_annotations(verdicts):
        print(line)
    with handle_errors():
        append_step_summary(verdicts, str(run_dir))
    code = exit_code(verdicts)
    out.print(f"{len(verdicts) - sum(not v.passed for v in verdicts)}/{len(verdicts)} budget lines met")
    raise typer.Exit(code)
