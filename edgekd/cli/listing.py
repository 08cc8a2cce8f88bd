"""``edgekd list``."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from .app import app, handle_errors, out


class What(str, enum.Enum):
    recipes = "recipes"
    targets = "targets"
    backends = "backends"
    losses = "losses"
    sources = "sources"
    tasks = "tasks"


@app.command("list")
def list_(what: Annotated[What, typer.Argument(
    metavar="WHAT", help="recipes, targets, backends, losses, data sources or tasks.")]) -> None:
    """List built-in recipes, targets, backends (with availability), distillation losses, data sources or
    tasks (what ``task:`` accepts)."""
    from ..config.schema import RECIPES_DIR, TARGETS_DIR, builtin_names
    from ..backends import load_target
    from ..run.recipe import load_recipe

    with handle_errors():
        if what is What.recipes:
            for name in builtin_names(RECIPES_DIR):
                out.print(f"{name}: {load_recipe(name).description}", highlight=False, markup=False)
        elif what is What.targets:
            for name in builtin_names(TARGETS_DIR):
                t = load_target(name)
                out.print(f"{name}: {t.backend} on {t.device} - {t.description}", highlight=False, markup=False)
        elif what is What.backends:
            from ..backends import BACKENDS

            for name in BACKENDS:
                ok, why = BACKENDS.get(name)().availability()
                out.print(f"{name}: {'available ' + why if ok else 'unavailable: ' + why}", highlight=False, markup=False)
        elif what is What.sources:
            from ..data import SOURCES

            for name in SOURCES:
                doc = " ".join((SOURCES.get(name).__doc__ or "").split())
                out.print(f"{name}: {doc}", highlight=False, markup=False)
        elif what is What.tasks:
            from ..tasks import TASKS

            for name in TASKS:
                task = TASKS.get(name)
                out.print(f"{name}: scored by {task.metric}; default loss {task.default_loss}", highlight=False,
                          markup=False)
        else:
            from ..losses import LOSSES

            for name in LOSSES:  # the console prints each string as one line (control characters escaped)
                for line in _describe_loss(name, LOSSES.get(name)).split("\n"):
                    out.print(line, highlight=False, markup=False)


def _describe_loss(name: str, cls: type) -> str:
    """``name: <paper line>`` then its recipe keys with defaults and what it needs."""
    summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    keys = ", ".join(f"{k}={'required' if f.is_required() else f.default!r}" for k, f in cls.Params.model_fields.items())
    needs = [w for w, on in (("a teacher", cls.needs_teacher), ("labels", cls.needs_labels)) if on]
    return (f"{name}: {summary}\n    keys: {keys or '(none)'}; also weight=1.0\n"
            f"    needs: {', '.join(needs) or 'neither teacher nor labels'}")
