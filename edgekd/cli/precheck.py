"""The inputs a command names, checked before anything heavy is imported: torch alone takes about two
seconds to import (12 on a loaded runner), and a mistyped path should be answered at once. Only what
can be judged from the files themselves is checked here; the full checks run later as before, with the
same messages."""

from __future__ import annotations

from pathlib import Path


def check_compress_inputs(checkpoint: Path | None, arch: str | None, recipe: str, budget: Path | None,
                          targets: list[str] | None) -> None:
    """The checkpoint file exists (an ``hf:`` folder is checked by its loader), the recipe and every
    target resolve to a built-in name or a file, and the budget file is a valid budget."""
    from ..config.schema import RECIPES_DIR, TARGETS_DIR, load_budget, resolve_file
    from ..errors import CheckpointError, RecipeError, TargetError

    if checkpoint is not None and not (arch or "").startswith("hf:") and not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint file not found")
    resolve_file(recipe, RECIPES_DIR, RecipeError, "recipe")
    for target in targets or ():
        resolve_file(target, TARGETS_DIR, TargetError, "target")
    if budget is not None:
        load_budget(budget)
