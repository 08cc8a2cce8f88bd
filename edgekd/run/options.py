"""What ``compress`` takes and gives back: the options (one field per ``edgekd compress`` flag) and the
result (the run directory, its report and the budget's verdicts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import Budget, Recipe
from ..report.gate import Verdict


@dataclass
class CompressResult:
    run_dir: Path
    report: dict[str, Any] | None
    verdicts: list[Verdict] | None
    wrote_recipe: bool = False  # a dry run: whether it wrote recipe.resolved.yaml (never into an existing run)


@dataclass(frozen=True)
class CompressOptions:
    """What ``compress`` takes besides the checkpoint: one field per ``edgekd compress`` flag."""

    arch: str | None = None
    arch_args: dict[str, Any] | None = None
    recipe: str | Path | Recipe = "default"
    targets: list[str] | None = None
    data: str | None = None
    out: str | Path | None = None
    budget: str | Path | Budget | None = None
    trust_checkpoint: bool = False
    dry_run: bool = False
    resume: bool = False
    force: bool = False
    device: str | None = None
    allow_globals: tuple[str, ...] = ()
    expect_sha256: str | None = None
    keep_all: bool = False  # keep each finished stage's training state (resuming needs only unfinished ones)
    timing: dict[str, Any] | None = None  # latency keys every target measures with (--runs, --seconds)
