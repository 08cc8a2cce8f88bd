"""The Typer application: each command parses, calls one API function, renders.

Every command exits by one table (``EXIT_CODES``, in the README): 0 ok, 1 the work or a budget failed,
2 bad input, 3 an internal error (a bug: one line, the traceback under ``EDGEKD_DEBUG=1``), 130
interrupted. A CI job can so tell a slower model (1) from a broken file (2) from a broken tool (3).
"""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from ..errors import EdgekdError, first_line
from ..progress import plain_console

EXIT_CODES = {0: "ok: the work ran and every budget was met", 1: "the work failed or a budget was violated",
              2: "bad input: a file, key, flag or run directory is wrong (nothing was changed)",
              3: "internal error: a bug in edgekd (set EDGEKD_DEBUG=1 for the traceback)", 130: "interrupted"}
INTERNAL_ERROR = 3
# an OSError with one of these is about a path the user chose (read-only filesystem, a folder where a file
# was asked for, a file where a folder was), so it is bad input (2), not a bug (3)
USER_PATH_ERRNOS = (errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES,
                    errno.EPERM)

app = typer.Typer(name="edgekd", help="Compress a trained PyTorch model to fit an edge device, measure it on "
                  "each target, report the trade-off, and gate CI on budgets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})  # -h as every CLI has it

# Tables are wider than 80 columns; when piped (CI logs) do not squeeze them. Every string printed is one
# plain line (names.plain_console): a name holding markup or a newline is shown, never obeyed.
out = plain_console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = plain_console(stderr=True, soft_wrap=True)


def show_version(value: bool) -> None:
    if value:
        from ..version import __version__

        out.print(f"edgekd {__version__}")
        raise typer.Exit(0)


@app.callback()
def edgekd_options(version: bool = typer.Option(False, "--version", "-V", callback=show_version, is_eager=True,
                                                help="Print edgekd's version and exit.")) -> None:
    """Compress a trained PyTorch model to fit an edge device, measure it on each target, report the
    trade-off, and gate CI on budgets."""


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn edgekd's errors into one line and an exit code; keep tracebacks for real bugs."""
    try:
        yield
    except EdgekdError as exc:
        err.print(f"edgekd: error: {exc}", style="red")  # the console makes it one plain line
        raise typer.Exit(exc.exit_code) from None
    except PermissionError as exc:  # an --out or input the user cannot write or read: their input (2), not a bug
        err.print(f"edgekd: error: {exc.filename or 'a file'}: permission denied; choose a path you can write "
                  f"(or read)", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        if exc.errno in USER_PATH_ERRNOS:  # a path the user gave that cannot be written or read as asked
            err.print(f"edgekd: error: {exc.filename or 'a path'}: {exc.strerror}; choose another path")
            raise typer.Exit(2) from None
        if exc.errno != errno.ENOSPC:
            raise_internal(exc)
        err.print(f"edgekd: error: {exc.filename or 'a file'}: the disk is full; free space or choose another --out, "
                  f"then rerun with --resume", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("edgekd: interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001
        raise_internal(exc)


def raise_internal(exc: Exception) -> None:
    """A bug: one line and exit 3, or the traceback under ``EDGEKD_DEBUG=1``."""
    if os.environ.get("EDGEKD_DEBUG"):
        raise exc
    err.print(f"edgekd: internal error: {first_line(exc, with_type=True)[:500]} (set EDGEKD_DEBUG=1 for the traceback)",
              highlight=False, markup=False)
    raise typer.Exit(INTERNAL_ERROR) from None


def detach_stdin() -> None:
    """No edgekd command reads standard input, so none lets a library read it either: a library that
    asks a question there (transformers' "run this folder's code? [y/N]") gets end-of-file, and a
    ``y`` piped into edgekd answers nothing. Both the Python object and descriptor 0 point at /dev/null."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(fd, 0)
    finally:
        os.close(fd)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process


def honour_interrupts() -> list[int]:
    """Ctrl-C raises KeyboardInterrupt as usual, and is also noted: a library that swallows the
    exception (an ``except BaseException`` around an import; 3 of 7 interrupted runs went on to exit 0)
    cannot make the process forget it. Returns the list the handler appends to."""
    import signal

    seen: list[int] = []

    def on_interrupt(signum: int, frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    return seen


def main() -> None:
    detach_stdin()
    interrupted = honour_interrupts()
    try:
        app(prog_name="edgekd")
    except SystemExit:
        if interrupted:
            err.print("edgekd: interrupted")
            sys.exit(130)
        raise
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    sys.exit(main())
