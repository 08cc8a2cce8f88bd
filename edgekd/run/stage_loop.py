"""The stages in recipe order, each run in its own folder or, under ``--resume``, its finished record
reused when its config, its inputs and every recipe field and target setting it read are unchanged."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..artifacts.artifact import Artifact, config_hash, read_record, write_record
from ..config.schema import Recipe
from ..backends import load_target
from ..data import Splits
from ..errors import InputError
from ..progress import console, wall_time
from ..measure.measurement import BackendPool
from ..models.checkpoint import LoadedCheckpoint
from ..stages import STAGES, StageContext
from ..stages.base import RecipeReads, recipe_field_hashes
from ..version import __version__


@dataclass
class RunState:
    """What the steps of one compress run share once the teacher and the data are loaded."""

    rec: Recipe
    run_dir: Path
    splits: Splits
    loaded: LoadedCheckpoint       # the teacher
    variants: dict[str, Artifact]  # every variant made so far, the teacher first
    ctx: StageContext
    pool: BackendPool
    # target name -> (timer of an ONNX file there, the target's settings)
    latency_probe_for: Callable[[str], tuple[Callable[[Path], float], dict[str, Any]]]
    extra: dict[str, Any]          # manifest fields gathered on the way
    keep_all: bool = False         # --keep-all: finished stages keep their training state


def run_stages(state: RunState, resume: bool) -> list[dict[str, Any]]:
    """Each stage in recipe order, or its finished record reused under ``--resume`` when its config,
    inputs and every recipe field and target it read are unchanged; the stages' log for the manifest."""
    rec, run_dir, ctx, variants = state.rec, state.run_dir, state.ctx, state.variants
    stage_log = []
    whole_recipe = config_hash(rec.model_dump(mode="json", exclude={"name", "description", "targets"}))
    for i, spec in enumerate(rec.stages):
        folder = run_dir / "stages" / f"{i:02d}-{spec.stage}"
        key = config_hash(spec.model_dump(), [a.config_hash for a in variants.values()], __version__)
        made, why = read_record(folder, key, lambda reads: changed_reads(reads, rec)) if resume else (None, "")
        reused = made is not None
        if made is None:
            again = f" (again: {why})" if resume and why != "not finished" else ""
            console.print(f"stage {i + 1}/{len(rec.stages)}: {spec.stage}{again}", style="bold")
            if folder.exists() and (not resume or why != "not finished"):  # a killed stage keeps its training state
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            # a killed stage's training state resumes only under the very same recipe (its reads are not
            # known until it finishes)
            ctx.stage_dir, ctx.stage_key, ctx.stage_key_path = folder, config_hash(key, whole_recipe), f"stages.{i}"
            ctx.recipe, probed, ctx.state_files = RecipeReads(rec), {}, []
            ctx.latency_probe = recorded_probe(state.latency_probe_for, probed)
            began = time.perf_counter()
            made = STAGES.get(spec.stage)(variants, spec, ctx)
            seconds = round(time.perf_counter() - began, 1)
            write_record(folder, key, made, {"recipe": recipe_field_hashes(rec, ctx.recipe.read_fields()),
                                             "targets": probed})
            if not state.keep_all:  # the stage is recorded: its training state can never be resumed from
                for training_state in ctx.state_files:
                    training_state.unlink(missing_ok=True)
            console.print(f"stage {i + 1}/{len(rec.stages)}: {spec.stage} done in {wall_time(seconds)}")
        else:
            seconds = None  # this run spent nothing on it
            console.print(f"stage {i + 1}/{len(rec.stages)}: {spec.stage} (resumed from {folder})")
        stage_log.append({"stage": spec.stage, "folder": str(folder.relative_to(run_dir)), "reused": reused,
                          "outputs": [a.variant for a in made], "seconds": seconds})
        for art in made:
            variants[art.variant if art.kind != "onnx" else f"{art.variant}.onnx"] = art
    return stage_log


def recorded_probe(probe_for: Any, probed: dict[str, str]) -> Any:
    """``latency_probe`` that notes a hash of each target's settings it handed a stage."""
    def probe(name: str):
        timed, settings = probe_for(name)
        probed[name] = config_hash(settings)
        return timed, settings

    return probe


def changed_reads(reads: dict[str, Any], rec: Recipe) -> str | None:
    """Why a finished stage's recorded reads no longer hold (a recipe field or a target's settings it
    read has another value now), or None when they all do."""
    now = recipe_field_hashes(rec, list(reads.get("recipe", {})))
    for name, digest in reads.get("recipe", {}).items():
        if now[name] != digest:
            return f"recipe '{name}' changed since it ran"
    for name, digest in reads.get("targets", {}).items():
        try:
            current = config_hash(load_target(name).model_dump())
        except InputError:
            return f"target {name} it timed on is gone"
        if current != digest:
            return f"target {name} it timed on changed"
    return None
