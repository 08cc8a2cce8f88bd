"""What edgekd prints: rich progress bars and messages on stderr (stdout keeps only tables and JSON a
script may parse), and every name a user chose made safe for a terminal or CI log on the way.

One holding a newline put ``::add-mask::`` at the start of a CI log line (GitHub reads that as a
workflow command), and rich markup (``ort[/]``) crashed the terminal table after training: the rules
are stated once, as data, so a test can generate names against them."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from rich.console import Console

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def for_terminal(text: object) -> str:
    """``text`` safe to print as one line through rich or into a CI log: control characters (newlines
    included) shown as escapes, rich markup escaped, and a leading ``::`` (a GitHub workflow command)
    broken. Every message that carries a name a user chose goes through this."""
    from rich.markup import escape

    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    if shown.startswith("::"):
        shown = " " + shown
    return escape(shown)


def for_plain_log(text: object) -> str:
    """Like ``for_terminal`` for output that is not rich markup (``print``, JUnit, step summaries)."""
    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return " " + shown if shown.startswith("::") else shown


def plain_console(**kwargs: object) -> "Console":
    """A rich Console whose ``print`` shows every string as plain text on one line (``for_plain_log``):
    no markup is interpreted and no control character reaches the terminal or log, whatever name a
    message carries. Colour is given as ``style=``; tables and other renderables pass unchanged."""
    from rich.console import Console

    class PlainConsole(Console):
        def print(self, *objects: object, **options: object) -> None:  # type: ignore[override]
            options.update(markup=False, highlight=False)
            super().print(*(for_plain_log(o) if isinstance(o, str) else o for o in objects), **options)

    return PlainConsole(**kwargs)


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


def wall_time(seconds: float) -> str:
    """``42.0 s``, ``14 min 29 s``, ``2 h 05 min``: how long a stage took, as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def runtime_log_severity() -> int:
    """ONNX Runtime's session log level: errors only (3), or its own default, warnings (2), under
    ``EDGEKD_DEBUG=1``. Its warnings at session creation ("Removing initializer ...", one line per folded
    constant) ran to hundreds of lines per EfficientNet-class file and buried edgekd's own output."""
    import os

    return 2 if os.environ.get("EDGEKD_DEBUG") else 3
