"""A teacher that cannot be told from guessing stops the run before anything trains (issue 26): scored
on the validation split against the most common class's share, with a hint about preprocessing and
the class order; ``teacher_check: false`` runs it anyway; the rule's error rates hold for any split
size and class count (exact binomial sums over generated cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binom

from edgekd.config.schema import DataSpec
from edgekd.data import build_splits
from edgekd.run.teacher import above_chance
from edgekd.tasks import task_for

from .conftest import TINY_DATA, invoke, write_yaml


def tiny_npz(path, shift: int = 1) -> str:
    """TINY_DATA's own images with every label moved ``shift`` classes on (1: what a teacher trained on
    the real order sees when an image folder sorts its classes otherwise)."""
    splits = build_splits(DataSpec(**TINY_DATA))
    arrays = {}
    for split in ("train", "val", "test"):
        xs, ys = zip(*splits.arrays(split))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = np.concatenate(xs), (np.concatenate(ys) + shift) % 4
    np.savez(path, **arrays)
    return str(path)


def recipe(tmp_path, data: dict, **top) -> str:
    return str(write_yaml(tmp_path / "r.yaml", {"name": "t", "arch": "edgekd:tiny_cnn", "data": data, **top,
                                                 "stages": [{"stage": "distill", "epochs": 1}, {"stage": "export"}]}))


BROKEN = {  # the teacher's own images, with the labels in another order or normalised otherwise
    "class order": lambda tmp: {"source": "npz", "batch_size": 32, "path": tiny_npz(tmp / "shifted.npz")},
    "preprocessing": lambda tmp: {"source": "npz", "batch_size": 32, "path": tiny_npz(tmp / "same.npz", 0),
                                  "preprocess": {"mean": [0.9], "std": [0.05]}},
}


@pytest.mark.parametrize("fault", sorted(BROKEN))
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_teacher_no_better_than_guessing_stops_the_run_before_training(tiny_teacher, tmp_path, fault, dry_run):
    data = BROKEN[fault](tmp_path)
    out = tmp_path / "run"
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path, data), "--out", out,
                    *(["--dry-run"] if dry_run else []))
    assert result.exit_code == 2, result.output
    said = result.output
    assert "cannot be told from chance" in said and "validation split" in said, said
    assert "data.preprocess" in said and "same order" in said and "teacher_check: false" in said, said
    assert "stage 1/" not in said  # nothing trained
    assert not out.exists()  # and nothing was left behind


@pytest.mark.floor
def test_the_same_images_as_trained_pass(tiny_teacher, tmp_path):
    data = {"source": "npz", "batch_size": 32, "path": tiny_npz(tmp_path / "same.npz", 0)}
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path, data), "--out", tmp_path / "run",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    assert "teacher: top-1 accuracy 1.0000 on the validation split" in result.output


def test_teacher_check_false_runs_a_random_teacher(tiny_teacher, tmp_path):
    data = BROKEN["class order"](tmp_path)
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path, data, teacher_check=False),
                    "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "cannot be told from chance" not in result.output


def test_a_teacher_that_learned_is_scored_and_recorded(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    check = manifest["teacher_check"]
    assert check["samples"] > 0 and check["val_accuracy"] > check["chance"] + 0.3, check
    assert 0.25 <= check["chance"] < 0.5  # the most common of four classes


def test_only_a_task_with_a_chance_level_is_checked():
    labels = np.array([0, 0, 0, 1, 2, 3])
    assert task_for("classification").chance(labels) == pytest.approx(0.5)
    assert task_for("classification", metric="tests.test_task_plugin:top2").chance(labels) is None
    assert task_for("embedding").chance(labels) is None


@settings(max_examples=200, deadline=None)
@given(n=st.integers(5, 3000), classes=st.integers(2, 1000))
def test_a_guessing_teacher_passes_at_most_one_time_in_a_hundred(n, classes):
    """Exact: the probability that a teacher whose true score is chance gets a count the rule lets
    through, summed over every count it could get."""
    chance = 1.0 / classes
    passing = [k for k in range(n + 1) if above_chance(k, n, chance)]
    assert binom.pmf(passing, n, chance).sum() <= 0.01


@settings(max_examples=200, deadline=None)
@given(n=st.integers(100, 3000), classes=st.integers(2, 1000), share=st.floats(0.5, 1.0))
def test_a_teacher_that_learned_is_stopped_at_most_one_time_in_twenty(n, classes, share):
    """A teacher that closes ``share`` (at least half) of the gap from chance to 1, on 100 or more
    validation samples (on fewer, a two-class teacher at 0.75 cannot be told from guessing at 99%: the
    error says how many samples it had)."""
    chance = 1.0 / classes
    true = chance + share * (1 - chance)
    stopped = [k for k in range(n + 1) if not above_chance(k, n, chance)]
    assert binom.pmf(stopped, n, true).sum() <= 0.05


def test_the_rule_is_monotone_in_the_count():
    for n, chance in ((12, 0.25), (500, 0.1), (40, 0.5)):
        verdicts = [above_chance(k, n, chance) for k in range(n + 1)]
        assert verdicts == sorted(verdicts) and not verdicts[0] and verdicts[-1]
