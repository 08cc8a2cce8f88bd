"""Adding a stage (issue 24): a toy stage registered from this file alone (its config model, its run
function, a resolver and a preflight) is accepted by a recipe and runs in a compress run, in the flow's
order, with its key validated like a built-in stage's. Nothing outside this file knows its name."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from edgekd.config.schema import StageConfig, stage_config
from edgekd.stages.base import PREFLIGHTS, RESOLVERS, STAGES, preflight_error

from . import spawn
from .conftest import TINY_DATA, invoke, write_yaml


@stage_config("toy-note")
class ToyNoteConfig(StageConfig):
    """Writes a note into its stage folder; its text defaults to the targets' backends."""

    stage: Literal["toy-note"]
    order: ClassVar[float] = 2.5  # after quantize, before export
    note: str | None = None


@RESOLVERS.register("toy-note")
def resolve_toy_note(cfg: ToyNoteConfig, targets, where: str) -> ToyNoteConfig:
    return cfg if cfg.note is not None else cfg.model_copy(update={"note": "+".join(t.backend for t in targets)})


@PREFLIGHTS.register("toy-note")
def preflight_toy_note(cfg: ToyNoteConfig, preview, where: str) -> None:
    if not cfg.note.strip():
        raise preflight_error(where, "toy-note", "the note is blank", "write something")


@STAGES.register("toy-note")
def toy_note(variants, cfg: ToyNoteConfig, ctx) -> list:
    (ctx.stage_dir / "note.txt").write_text(f"{cfg.note}: {', '.join(variants)}")
    return []


def recipe(tmp_path, target, stages):
    return write_yaml(tmp_path / "toy.yaml", {"name": "toy", "arch": "edgekd:tiny_cnn", "data": TINY_DATA,
                                              "stages": stages, "targets": [str(target)]})


def test_a_stage_registered_from_a_test_file_runs_in_a_recipe(tiny_teacher, tiny_files, tmp_path):
    r = recipe(tmp_path, tiny_files["ort"], [{"stage": "toy-note"}, {"stage": "export"}])
    result = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "stages" / "00-toy-note" / "note.txt").read_text() == "onnxruntime: teacher-fp32"
    assert "note: onnxruntime" in (tmp_path / "run" / "recipe.resolved.yaml").read_text()  # its resolver ran
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [s["stage"] for s in manifest["stages"]] == ["toy-note", "export"]


def test_a_registered_stages_keys_order_and_preflight_are_checked_like_a_built_in_ones(tiny_teacher, tiny_files, tmp_path):
    typo = invoke("compress", tiny_teacher, "--recipe",
                  recipe(tmp_path, tiny_files["ort"], [{"stage": "toy-note", "nite": "x"}, {"stage": "export"}]),
                  "--out", tmp_path / "a", "--dry-run")
    assert typo.exit_code == 2 and "unknown key 'stages.0.toy-note.nite'" in typo.output
    assert "valid keys: stage, note" in typo.output
    order = invoke("compress", tiny_teacher, "--recipe",
                   recipe(tmp_path, tiny_files["ort"], [{"stage": "toy-note"}, {"stage": "quantize"},
                                                        {"stage": "export"}]), "--out", tmp_path / "b", "--dry-run")
    assert order.exit_code == 2 and "quantize -> toy-note -> export" in order.output
    blank = invoke("compress", tiny_teacher, "--recipe",
                   recipe(tmp_path, tiny_files["ort"], [{"stage": "toy-note", "note": " "}, {"stage": "export"}]),
                   "--out", tmp_path / "c", "--dry-run")
    assert blank.exit_code == 2 and "preflight stages.0 (toy-note): the note is blank" in blank.output


def test_every_way_to_read_a_recipe_knows_the_built_in_stages_in_a_fresh_process():
    """Stage configs are registered by the stages' folders; a reader that did not import them would see
    no stage at all. In a fresh interpreter (no test imported them first): the CLI's list, and the
    public ``edgekd.load_recipe``."""
    import sys

    listed = spawn.run([sys.executable, "-m", "edgekd", "list", "recipes"], capture_output=True, text=True)
    assert listed.returncode == 0 and "ptq:" in listed.stdout, listed.stdout + listed.stderr
    loaded = spawn.run([sys.executable, "-c", "import edgekd; print([s.stage for s in edgekd.load_recipe('ptq').stages])"],
                            capture_output=True, text=True)
    assert loaded.returncode == 0 and "['distill', 'quantize', 'export']" in loaded.stdout, loaded.stderr
