"""The project's exceptions: one flat family, each carrying the exit code the CLI returns.

Input errors (a user's file, key or flag is wrong) exit 2; work errors (training diverged, an
export check failed, a backend could not run) exit 1. The CLI prints ``str(error)`` on one line and
never a traceback for these.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """Base of every error edgekd raises on purpose."""

    exit_code = 1


class InputError(EdgekdError):
    """Bad usage or bad input: a missing file, an invalid key, a wrong shape."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe file is missing or invalid."""


class TargetError(InputError):
    """A target description is missing or invalid."""


class BudgetError(InputError):
    """A budget file is missing or invalid."""


class CheckpointError(InputError):
    """A checkpoint cannot be loaded safely or does not match its architecture."""


class DataError(InputError):
    """A data spec names data that is missing or malformed."""


class ReportError(InputError):
    """A run directory has no readable report or measurements."""


class StageError(EdgekdError):
    """A compression stage ran and failed (NaN loss, failed export check, ...)."""


class BackendUnavailable(EdgekdError):
    """A backend's runtime is not installed or has no device here."""


class BackendError(EdgekdError):
    """A backend is installed but failed to compile or run a model."""


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first non-blank line of ``exc``'s message, for the one-line errors the CLI prints; the type's
    name when the message is empty (``str(exc).splitlines()[0]``, copied to 20 places, raised IndexError
    on such an exception and turned a clean error into an internal one). ``with_type`` prefixes the type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not with_type:
        return lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
