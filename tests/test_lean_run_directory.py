"""A lean run directory (issue 26): a finished stage drops its training state (an unfinished one keeps
it, so --resume still continues it), ``models/`` shares each exported file with the export stage
instead of holding a second copy, and ``--keep-all`` keeps every training state."""

from __future__ import annotations

import pytest

import os

from .conftest import invoke


def states(run) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.glob("stages/*/*_state.pt"))


@pytest.mark.floor
def test_finished_stages_drop_their_training_state_and_models_are_stored_once(tiny_run):
    assert states(tiny_run) == []
    assert (tiny_run / "stages" / "00-distill" / "stage.json").is_file()  # the stage did train and finish
    for published in (tiny_run / "models").glob("*.onnx"):
        source = tiny_run / "stages" / "02-export" / published.name
        assert source.is_file() and os.path.samefile(published, source), published  # one file, two names


def test_keep_all_keeps_every_training_state(tiny_teacher, tiny_files, tmp_path):
    out = tmp_path / "run"
    result = invoke("compress", tiny_teacher, "-r", tiny_files["recipe"], "-o", out, "-t", tiny_files["ort"],
                    "--keep-all")
    assert result.exit_code == 0, result.output
    assert states(out) == ["stages/00-distill/train_state.pt", "stages/01-quantize/train_state.pt"]
    assert invoke("report", out).exit_code == 0  # the kept states do not unsettle the run's record
