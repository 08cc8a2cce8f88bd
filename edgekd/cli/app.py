"""The Typer application: each command parses, calls one API function, renders.

User mistakes and failed work end with one line on stderr and exit code 2 or 1 (DESIGN.md); set
``EDGEKD_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EdgekdError

app = typer.Typer(name="edgekd", help="Compress a trained PyTorch model to fit an edge device, measure it on "
                  "each target, report the trade-off, and gate CI on budgets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
# Tables are wider than 80 columns; when piped (CI logs) do not squeeze them.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn edgekd's errors into one line and an exit code; keep tracebacks for real bugs."""
    try:
        yield
    except EdgekdError as exc:
        err.print(f"[red]edgekd: error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("edgekd: interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("EDGEKD_DEBUG"):
            raise
        err.print(f"edgekd: internal error: {type(exc).__name__}: {exc} (set EDGEKD_DEBUG=1 for the traceback)",
                  highlight=False, markup=False)
        raise typer.Exit(1) from None


def main() -> None:
    app(prog_name="edgekd")


if __name__ == "__main__":
    sys.exit(main())
