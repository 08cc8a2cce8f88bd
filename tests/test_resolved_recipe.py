"""``recipe.resolved.yaml`` says what the run derived (issue 26): the teacher's architecture, the device
``auto`` chose, the student the keys make and every target's effective settings, defaults filled in; a
dry run prints the same lines; and the file reruns into the same run."""

from __future__ import annotations

import pytest

import json

import yaml

from edgekd.backends import load_target

from .conftest import invoke


def notes(text: str) -> dict[str, str]:
    """The resolved file's comment lines (or a dry run's printed ones), by what they describe."""
    found = {}
    for line in text.splitlines():
        line = line.removeprefix("# ")
        head, sep, rest = line.partition(": ")
        if sep and head.split(" ")[0] in ("data", "teacher", "student", "target"):
            found.setdefault(head, rest)  # the first: the run prints more "teacher: ..." lines later
    return found


@pytest.mark.floor
def test_the_resolved_recipe_says_what_the_run_derived_and_reruns_the_same(tiny_teacher, tiny_files, tmp_path):
    first = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", tmp_path / "a", "--dry-run")
    assert first.exit_code == 0, first.output
    text = (tmp_path / "a" / "recipe.resolved.yaml").read_text()
    written = notes(text)
    assert written == {k: v for k, v in notes(first.output).items() if k in written}  # printed as written
    assert written["teacher"].startswith("arch edgekd:tiny_cnn, task classification; training device cpu")
    assert written["student"].startswith("the teacher's architecture at width 0.5")
    for name in ("tiny-ort", "tiny-ov"):
        effective = json.loads(written[f"target {name}"])
        path = tiny_files["ort" if name == "tiny-ort" else "ov"]
        assert effective == load_target(str(path)).model_dump(mode="json", exclude={"name", "description"})
        assert effective["latency"]["runs"] == 20 and "max_drift" in effective["latency"]  # defaults filled in

    again = invoke("compress", tiny_teacher, "--recipe", tmp_path / "a" / "recipe.resolved.yaml",
                   "--out", tmp_path / "b", "--dry-run")
    assert again.exit_code == 0, again.output
    rerun = (tmp_path / "b" / "recipe.resolved.yaml").read_text()
    assert notes(rerun) == written
    assert yaml.safe_load(rerun) == yaml.safe_load(text)  # the same recipe, key for key
