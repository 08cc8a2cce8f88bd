"""Terminal tables shared by the commands."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..report.build import measurement_notes, table_rows, targets_of
from ..progress import for_terminal
from .app import out


def print_report_tables(report: dict[str, Any]) -> None:
    for target in targets_of(report):
        rows = table_rows(report, target)
        first = next(r for r in report["results"] if r["target"] == target)
        table = Table(title=for_terminal(f"{target} ({first['backend']}, {first['device']})"), title_justify="left")
        for h in rows[0]:
            table.add_column(h, justify="left" if h in ("variant", "precision", "status") else "right")
        for row in rows:
            table.add_row(*(for_terminal(v) for v in row.values()))
        out.print(table)
    noisy = sum(len(r.get("warnings", [])) for r in report["results"])
    if noisy:
        out.print(f"{noisy} measurement warning(s), e.g. latency that drifted while it was measured: "
                  f"see 'Measurement notes' in report.md", style="yellow")
    for note in measurement_notes(report)[:1]:
        out.print(note, highlight=False, markup=False)
