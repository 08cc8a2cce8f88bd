"""``edgekd report``."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from .app import app, handle_errors, out


class Format(str, enum.Enum):
    md = "md"
    html = "html"
    json = "json"


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by 'edgekd compress'.")],
    fmt: Annotated[Format, typer.Option("--format", help="What to print: md (tables), html (writes "
                   "report.html and prints its path) or json.")] = Format.md,
) -> None:
    """Re-render report.json/.md/.html and tradeoff.png from a run directory's files only."""
    from ..report import write_report

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
