"""Rich progress bars on stderr, so stdout keeps only tables and JSON a script may parse."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from .names import plain_console

# every message one line, never cut mid-phrase, and never read as markup or a control sequence
console = plain_console(stderr=True, soft_wrap=True)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator["_Bar"]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, status="")
        yield _Bar(progress, task)


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, status: str | None = None) -> None:
        fields = {"status": status} if status is not None else {}
        self._progress.update(self._task, advance=n, **fields)
