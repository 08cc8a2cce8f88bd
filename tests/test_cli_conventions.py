"""CLI conventions (issue 26): short options, flags without a value placeholder, upper-case arguments,
``compress --runs/--seconds`` on every target, and bad input answered before torch is imported."""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import invoke
from .spawn import run


def test_short_options_and_timing_overrides_reach_every_target(tiny_teacher, tiny_files, tmp_path):
    result = invoke("compress", tiny_teacher, "-r", tiny_files["recipe"], "-o", tmp_path / "run",
                    "-t", tiny_files["ort"], "-t", tiny_files["ov"], "--runs", 7, "--seconds", 0.25, "--dry-run")
    assert result.exit_code == 0, result.output
    notes = [line.partition(": ")[2] for line in (tmp_path / "run" / "recipe.resolved.yaml").read_text().splitlines()
             if line.startswith("# target ")]
    assert len(notes) == 2
    for settings in map(json.loads, notes):
        assert settings["latency"]["runs"] == 7 and settings["latency"]["min_seconds"] == 0.25
        assert settings["latency"]["warmup_runs"] == 3  # the target's own keys stay
    assert invoke("compress", tiny_teacher, "-r", tiny_files["recipe"], "--runs", 0, "--dry-run").exit_code == 2


@pytest.mark.parametrize("command", ["compress", "bench", "gate", "report", "compare", "baseline save"])
def test_help_shows_flags_without_a_placeholder_and_arguments_in_capitals(command):
    text = invoke(*command.split(), "-h").output
    assert "<bool>" not in text.replace("-h      <bool>", ""), text  # --help's own is Typer's
    assert "{run_dir}" not in text and "{model}" not in text, text
    if command == "compress":
        for short in ("-o", "-t", "-r", "-a", "-d", "-b", "-f"):
            assert f" {short} " in text, (short, text)


@pytest.mark.parametrize("args, said", [
    (["compress", "nope.pt"], "nope.pt: checkpoint file not found"),
    (["compress", "--recipe", "nope.yaml"], "nope.yaml: recipe file not found"),
    (["compress", "--target", "nope.yaml"], "nope.yaml: target file not found"),
    (["compress", "--budget", "nope.yaml"], "nope.yaml: file not found"),
])
def test_bad_input_is_answered_before_torch_is_imported(args, said, tmp_path):
    done = run([sys.executable, "-X", "importtime", "-m", "edgekd", *args], capture_output=True, text=True,
               cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert said in done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "edgekd.cli.compress" in imported and "torch" not in imported
