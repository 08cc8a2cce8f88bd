"""The recipe a compress call runs: a recipe file or object, ``--data`` applied to its raw ``data:`` mapping,
the command line's overrides (arch, arch arguments, device, targets), and the checkpoint it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from .. import stages  # noqa: F401  (every built-in stage registers its recipe keys)
from ..config.schema import Recipe, dump_recipe, read_recipe, recipe_with, with_text_training
from ..data.spec import parse_data_spec
from ..errors import CheckpointError, InputError
from .teacher import is_hf


def load_recipe(name_or_path: str | Path,
                patch: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Recipe:
    """A recipe file (a path, or a built-in name), validated against every registered stage."""
    return read_recipe(name_or_path, patch)


def assemble_recipe(recipe: str | Path | Recipe, data: str | None, *, arch: str | None,
                    arch_args: dict[str, Any] | None, device: str | None, targets: list[str] | None) -> Recipe:
    """The recipe with ``--data`` and the overrides applied; a bad override is a one-line InputError
    naming its key."""
    def text_defaults(rec: Recipe) -> Recipe:  # before any re-validation marks every key as set
        return with_text_training(rec) if is_hf(arch if arch is not None else rec.arch) else rec

    if isinstance(recipe, Recipe):
        recipe = text_defaults(recipe)
        rec = recipe_with(recipe, data=parse_data_spec(data, recipe.data.model_dump(exclude_unset=True))) \
            if data is not None else recipe
    else:  # --data edits the file's raw mapping, so the file may leave out what --data gives
        def with_data(raw: dict[str, Any]) -> dict[str, Any]:
            base = raw.get("data")
            return {**raw, "data": parse_data_spec(data, base if isinstance(base, dict) else {})}

        rec = load_recipe(recipe, with_data if data is not None else None)
        rec = text_defaults(rec)
    changes: dict[str, Any] = {}
    if arch is not None:
        changes["arch"] = arch
    if arch_args:
        changes["arch_args"] = {**rec.arch_args, **arch_args}
    if device is not None:
        changes["device"] = device
    if targets:
        changes["targets"] = list(targets)
    if changes:
        try:
            rec = recipe_with(rec, **changes)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise InputError(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}") from None
    return rec


def checkpoint_of(rec: Recipe, ckpt: Path | None) -> tuple[Recipe, Path | None]:
    """The checkpoint the run loads (a Hugging Face folder named by ``--arch hf:DIR`` is the checkpoint
    itself, and its tokenizer the data's unless the recipe names one), checked to exist."""
    if is_hf(rec.arch):
        folder = Path(rec.arch[3:])
        if ckpt is not None and ckpt.resolve() != folder.resolve():
            raise InputError(f"{ckpt}: with --arch {rec.arch} the checkpoint is that folder; leave CHECKPOINT out")
        ckpt = folder
        if rec.data.source == "text" and rec.data.tokenizer is None:  # its own tokenizer, unless told otherwise
            rec = recipe_with(rec, data=rec.data.model_copy(update={"tokenizer": str(folder)}))
    elif ckpt is not None and not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    return rec, ckpt


def resolved_text(rec: Recipe, preprocess: Any, notes: list[str] = ()) -> str:
    """``recipe.resolved.yaml``: the recipe as it runs, with the preprocessing every sample gets written
    out (what the architecture's tables chose, once silent: a resnet18 trained on 64x64 images was fed
    ImageNet's 256 -> 224 crop) and where each value came from, and a comment line for each value the
    run derived (``run_notes``: teacher, device, student, each target's effective settings), so the file
    reruns the same and says what it ran with. ``--dry-run`` prints the comment lines."""
    keys = preprocess.recipe_keys()
    if keys is not None and rec.data.source not in ("digits", "synthetic"):
        rec = recipe_with(rec, data={**rec.data.model_dump(), "preprocess": keys})
    header = [f"data: {preprocess.summary()}", *notes]
    return "".join(f"# {line}\n" for line in header) + dump_recipe(rec)


def run_notes(rec: Recipe, teacher_arch: str, device: Any, targets: list[Any]) -> list[str]:
    """What the run derived from its defaults and this machine, a line each: the teacher's architecture
    (the embedded default's when none was named), the training device ``auto`` chose, the student the
    ``student:`` keys make, and every target's settings with their defaults filled in."""
    import json

    s = rec.student
    if s.arch is not None:
        student = f"{s.arch}" + (f" {json.dumps(s.arch_args)}" if s.arch_args else "") + " (student.arch)"
    elif s.layers is not None:
        depth = f", depth {s.depth or 'half the teacher'}" if s.layers == "measured" else ""
        student = f"the teacher's layers {s.layers}{depth}"
    else:
        student = f"the teacher's architecture at width {s.width} ({s.init} init), or what a prune stage makes"
    lines = [f"teacher: arch {teacher_arch}, task {rec.task}; training device {device.to_json()['device']} "
             f"(device: {rec.device}, amp {device.to_json()['amp']})", f"student: {student}"]
    for t in targets:
        settings = t.model_dump(mode="json", exclude={"name", "description"})
        lines.append(f"target {t.name}: {json.dumps(settings, separators=(', ', ': '))}")
    return lines
