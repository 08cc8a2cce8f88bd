"""Issue 22.2: a run directory that cannot lie. Nothing is deleted or rewritten before every input is
checked; resume keys follow what each stage read; resume drops what the recipe no longer makes; names
reach paths through one rule; report/gate/baseline/compare read a run only while its recorded hashes
hold; nothing writes over a run's own record; budgets and baselines are validated by schema."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from .conftest import invoke, reseal, write_yaml


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the lock aside) and its SHA-256: "unchanged" means this is equal."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".edgekd.lock"}


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def compress(teacher: Path, recipe: Path, out: Path, *extra: object):
    return invoke("compress", teacher, "--recipe", recipe, "--out", out, *extra)


# ---------------------------------------------------------------- nothing changes before the inputs are checked
@pytest.mark.parametrize("flags", [("--force",), ("--force", "--dry-run"), ("--resume",), ("--resume", "--dry-run")])
def test_a_finished_run_survives_bad_input_found_late(run_copy, tiny_teacher, tiny_files, tmp_path, flags):
    """The data is checked only after the run directory is locked; a missing data file used to be
    found after --force had emptied the run (and a failed --resume rewrote its recipe.resolved.yaml)."""
    before = snapshot(run_copy)
    result = compress(tiny_teacher, tiny_files["recipe"], run_copy, "--data", tmp_path / "missing.npz", *flags)
    assert result.exit_code == 2, result.output
    assert snapshot(run_copy) == before
    assert json.loads((run_copy / "manifest.json").read_text())["status"] == "complete"


def test_a_dry_run_over_a_finished_run_changes_nothing(run_copy, tiny_teacher, tiny_files):
    before = snapshot(run_copy)
    for flags in (("--force", "--dry-run"), ("--resume", "--dry-run")):
        result = compress(tiny_teacher, tiny_files["recipe"], run_copy, "--target", "cpu-openvino", *flags)
        assert result.exit_code == 0 and "nothing written" in result.output, result.output
    assert snapshot(run_copy) == before


def test_an_exit_2_in_a_new_directory_leaves_nothing_so_the_same_command_reruns(tiny_teacher, tiny_files, tmp_path):
    out = tmp_path / "new"
    bad = compress(tiny_teacher, tiny_files["recipe"], out, "--data", tmp_path / "missing.npz")
    assert bad.exit_code == 2 and not out.exists(), bad.output
    again = compress(tiny_teacher, tiny_files["recipe"], out, "--dry-run")
    assert again.exit_code == 0 and "exists" not in again.output, again.output
    assert compress(tiny_teacher, tiny_files["recipe"], out, "--dry-run").exit_code == 0  # a dry run's folder is free


# ---------------------------------------------------------------- resume keys follow what a stage read
def test_resume_reruns_the_stages_that_read_what_changed(tiny_teacher, tiny_files, tmp_path):
    """Changing the ``student:`` block re-runs distillation (it reads it) and everything after; changing
    only the targets reuses every stage (no stage reads them) and re-measures."""
    recipe = yaml_of(tiny_files["recipe"])
    recipe["targets"] = [str(tiny_files["ort"])]
    path = write_yaml(tmp_path / "r.yaml", recipe)
    out = tmp_path / "run"
    assert compress(tiny_teacher, path, out).exit_code == 0
    size_before = model_size(out, "student-fp32")

    other_ort = write_yaml(tmp_path / "ort2.yaml", {**yaml_of(tiny_files["ort"]), "name": "tiny-ort2"})
    recipe["targets"] = [str(other_ort)]  # same runtime (the quantize stage's resolved choices stay), new target
    assert compress(tiny_teacher, write_yaml(path, recipe), out, "--resume").exit_code == 0
    assert reused(out) == {"distill": True, "quantize": True, "export": True}

    recipe["student"] = {"width": 0.25}
    result = compress(tiny_teacher, write_yaml(path, recipe), out, "--resume")
    assert result.exit_code == 0, result.output
    assert "recipe 'student' changed" in result.output
    assert reused(out) == {"distill": False, "quantize": False, "export": False}
    assert model_size(out, "student-fp32") < size_before  # the gate now sees the narrower student


def test_resume_drops_measurements_of_targets_the_recipe_no_longer_has(tiny_teacher, tiny_files, tmp_path):
    out = tmp_path / "run"
    assert compress(tiny_teacher, tiny_files["recipe"], out).exit_code == 0
    assert any("tiny-ov" in p.name for p in (out / "measurements").iterdir())
    result = compress(tiny_teacher, tiny_files["recipe"], out, "--resume", "--target", tiny_files["ort"])
    assert result.exit_code == 0, result.output
    assert not any("tiny-ov" in p.name for p in (out / "measurements").iterdir())
    report = json.loads((out / "report.json").read_text())
    assert {r["target"] for r in report["results"]} == {"tiny-ort"}
    assert invoke("gate", out, "--budget", write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})).exit_code == 0


def yaml_of(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def reused(run: Path) -> dict[str, bool]:
    return {s["stage"]: s["reused"] for s in json.loads((run / "manifest.json").read_text())["stages"]}


def model_size(run: Path, variant: str) -> int:
    return (run / "models" / f"{variant}.onnx").stat().st_size


# ---------------------------------------------------------------- names become file names through one rule
@pytest.mark.parametrize("name", ["../../../../escaped", "a/b", "x\n::add-mask::secret", ".hidden", "", "ort\\x"])
def test_a_target_name_that_is_no_file_name_is_refused_before_anything_runs(tmp_path, tiny_teacher, tiny_files,
                                                                               name):
    target = write_yaml(tmp_path / "t.yaml", {"name": name, "backend": "onnxruntime"})
    out = tmp_path / "deep" / "er" / "run"
    result = compress(tiny_teacher, tiny_files["recipe"], out, "--target", target)
    assert result.exit_code == 2, result.output
    assert "cannot name files" in result.output and not out.exists()
    assert not list(tmp_path.rglob("*escaped*"))
    assert not any(line.lstrip().startswith("::") for line in result.output.splitlines())  # no workflow command


def test_markup_in_a_target_name_is_shown_not_obeyed(tmp_path, tiny_teacher, tiny_files):
    """``ort[/]`` is refused as a file name (its '/'); ``ort[bold]`` is a legal name and prints as itself."""
    target = write_yaml(tmp_path / "t.yaml", {"name": "ort[bold]x", "backend": "onnxruntime", "threads": 1,
                                              "latency": {"warmup_runs": 1, "warmup_seconds": 0.0, "runs": 3,
                                                          "min_seconds": 0.0, "batch": 1, "throughput_seconds": 0.01,
                                                          "int8_max_ratio": None}})
    result = invoke("bench", run_model(tmp_path), "--target", target)
    assert result.exit_code == 0, result.output
    assert "ort[bold]x" in result.output


def run_model(tmp_path: Path) -> Path:
    import torch

    path = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False)
    return path


# ---------------------------------------------------------------- report and gate read only an intact run
def test_an_int8_file_replaced_by_the_fp32_one_is_refused(run_copy, tmp_path):
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    assert invoke("gate", run_copy, "--budget", budget).exit_code == 0
    shutil.copyfile(run_copy / "models" / "student-fp32.onnx", run_copy / "models" / "student-int8.onnx")
    for command in (("gate", run_copy, "--budget", budget), ("gate", run_copy / "report.json", "--budget", budget),
                    ("report", run_copy), ("baseline", "save", run_copy, "--out", tmp_path / "base.json"),
                    ("compare", run_copy, run_copy)):
        result = invoke(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "models/student-int8.onnx changed since the run completed" in result.output, result.output


def test_a_run_without_its_manifest_or_with_an_extra_measurement_is_refused(run_copy, tmp_path):
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    extra = run_copy / "measurements" / "student-int8@elsewhere.json"
    shutil.copyfile(next((run_copy / "measurements").glob("*.json")), extra)
    result = invoke("gate", run_copy, "--budget", budget)
    assert result.exit_code == 2 and "was not made by this run" in result.output
    extra.unlink()
    (run_copy / "manifest.json").unlink()
    result = invoke("gate", run_copy / "report.json", "--budget", budget)
    assert result.exit_code == 2 and "no manifest.json" in result.output


def test_a_report_rebuilt_by_edgekd_report_is_accepted(run_copy, tmp_path):
    (run_copy / "report.md").write_text("edited")
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    assert invoke("gate", run_copy, "--budget", budget).exit_code == 2
    assert invoke("report", run_copy).exit_code == 0  # the report is rebuilt from the verified files ...
    assert invoke("gate", run_copy, "--budget", budget).exit_code == 0  # ... and recorded again


# ---------------------------------------------------------------- nothing writes over a run's own record
@pytest.mark.parametrize("command", [("gate", "RUN", "--budget", "B", "--junit", "RUN/report.json"),
                                     ("gate", "RUN", "--budget", "B", "--junit", "RUN/models/student-int8.onnx"),
                                     ("baseline", "save", "RUN", "--out", "RUN/manifest.json"),
                                     ("baseline", "save", "RUN", "--out", "RUN/measurements/x.json")])
def test_outputs_never_overwrite_the_runs_record(run_copy, tmp_path, command):
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    args = [str(budget) if a == "B" else a.replace("RUN", str(run_copy)) for a in command]
    before = snapshot(run_copy)
    result = invoke(*args)
    assert result.exit_code == 2 and "would overwrite the record" in result.output, result.output
    assert snapshot(run_copy) == before


def test_a_junit_path_that_is_a_folder_is_bad_input(run_copy, tmp_path):
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    result = invoke("gate", run_copy, "--budget", budget, "--junit", tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.output


# ---------------------------------------------------------------- budgets and baselines by schema
@pytest.mark.parametrize("budget, message", [({"variant": "student-int8"}, "sets no limit"),
                                             ({"max_size_mb": float("nan")}, "finite"),
                                             ({"max_latency_ms": {"tiny-ort": {"p50": -1.0}}}, "greater than 0"),
                                             ({"max_accuracy_drop": -0.1}, "greater than or equal")])
def test_a_budget_that_cannot_judge_is_refused(run_copy, tmp_path, budget, message):
    result = invoke("gate", run_copy, "--budget", write_yaml(tmp_path / "b.yaml", budget))
    assert result.exit_code == 2 and message in result.output, result.output


def _edit_baseline(run: Path, tmp_path: Path, edit) -> Path:
    path = tmp_path / "base.json"
    assert invoke("baseline", "save", run, "--out", path).exit_code == 0
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _set_all(key, value):
    def edit(data):
        for row in data["rows"]:
            row[key] = value(row) if callable(value) else value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set_all("latency_samples_ms", lambda r: [float("nan")] * len(r["latency_samples_ms"])), "finite"),
    (_set_all("latency_samples_ms", lambda r: [0.0] * len(r["latency_samples_ms"])), "greater than 0"),
    (_set_all("size_bytes", -5), "greater than 0"),
    (_set_all("size_bytes", 0), "greater than 0"),
    (lambda d: d.update(rows=[r for r in d["rows"] if not r["variant"].startswith("student")]), "has no row for"),
    (lambda d: d.update(rows=[]), "empty"),
])
def test_a_baseline_that_would_pass_anything_is_refused(run_copy, tmp_path, edit, message):
    result = invoke("gate", run_copy, "--baseline", _edit_baseline(run_copy, tmp_path, edit))
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_baseline_from_another_recipe_or_data_is_judged_with_a_note(run_copy, tmp_path):
    def elsewhere(data):
        data["run"].update(recipe="another", inputs={"data": "0" * 64})

    path = _edit_baseline(run_copy, tmp_path, elsewhere)
    result = invoke("gate", run_copy, "--baseline", path, "--min-effect", "10")
    assert result.exit_code == 0, result.output
    assert "note: the baseline was made by recipe 'another'" in result.output
    assert "note: the baseline was measured on other data" in result.output
