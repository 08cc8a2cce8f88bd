"""Names users choose (recipes, targets, variants) on their two ways out: into a file name, and onto a
terminal or CI log. Each way has one function here, and nothing else turns a name into either.

A target named ``../../../../x`` wrote its measurement outside the run directory, and one holding a
newline put ``::add-mask::`` at the start of a CI log line (GitHub reads that as a workflow command),
or rich markup (``ort[/]``) crashed the terminal table after training. The rules are stated once,
as data, so a test can generate names against them.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME = 120  # characters in a name that becomes a file name (well under any filesystem's 255 bytes)
FORBIDDEN_IN_FILE_NAMES = ("/", "\\", "\0", ":")  # separators on some OS, and Windows drive/stream marks
NAME_RULE = (f"1-{MAX_NAME} printable characters, not starting with '.' or '-', without / \\ : or control "
             f"characters")


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be part of a file name inside a run directory, or None if it can."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is {len(name)} characters long"
    if name.startswith((".", "-")):
        return "it starts with '.' or '-'"
    bad = next((c for c in name if c in FORBIDDEN_IN_FILE_NAMES or unicodedata.category(c)[0] in "CZ"
                and c != " "), None)
    if bad is not None:
        return f"it holds {bad!r}"
    return None


def checked_file_name(name: str, what: str) -> str:
    """``name`` unchanged if it may become (part of) a file name, else a one-line InputError naming
    ``what`` (e.g. ``target name``) and the rule. The only way a chosen name reaches a path."""
    from .errors import InputError

    problem = file_name_problem(name)
    if problem is not None:
        raise InputError(f"{what} {name!r}: {problem}; a name that becomes a file name has {NAME_RULE}")
    return name


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
