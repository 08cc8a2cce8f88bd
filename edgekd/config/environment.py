"""The environment variables edgekd reads, each parsed and checked in one place.

``EDGEKD_TEACHER_CACHE_MB=abc`` used to fail with exit 3 after the run directory existed, and ``nan``,
``-1`` or ``1e400`` were taken as limits. ``compress`` checks every variable here before it touches
anything (``check_environment``), and readers call the same parser.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class NumberVariable:
    name: str
    default: float
    low: float
    high: float
    meaning: str

    def read(self) -> float:
        """The variable's value, or an InputError naming it and what is valid."""
        raw = os.environ.get(self.name)
        if raw is None or raw.strip() == "":
            return self.default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise InputError(f"environment variable {self.name}={raw[:40]!r}: {self.meaning} must be a number "
                             f"from {self.low:g} to {self.high:g} (default {self.default:g})")
        return value


TEACHER_CACHE_MB = NumberVariable("EDGEKD_TEACHER_CACHE_MB", 1024.0, 0.0, 1 << 20,
                                  "the teacher-output cache's size in MB (0 turns it off)")
NUMBER_VARIABLES = (TEACHER_CACHE_MB,)


def check_environment() -> None:
    """Every numeric variable edgekd reads, parsed now (before a run directory is touched)."""
    for variable in NUMBER_VARIABLES:
        variable.read()
