"""Fault injection (issue 14): hostile files, changed inputs, killed and concurrent runs, a full disk.

Each test asserts the exit code, the one-line message, and that nothing was lost or left half-written.
docs/reference.md's reliability table names the test that keeps each promise.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekd.models.zoo import TinyCNN

from ..conftest import FAST_LATENCY, TINY_DATA, invoke, save_model, write_yaml


def one_line_error(output: str) -> str:
    """The error line edgekd printed; fails if there is a traceback or more than one error line."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("edgekd: ")]
    assert len(lines) == 1, output
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".edgekd.lock"}


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    return write_yaml(tmp_path_factory.mktemp("t") / "ort.yaml",
                      {"name": "fault-ort", "backend": "onnxruntime", "threads": 1, "latency": FAST_LATENCY})


def recipe(path: Path, target: Path, data: dict | None = None, stages: list | None = None, **top) -> Path:
    return write_yaml(path, {
        **top, "name": "faults", "arch": "edgekd:tiny_cnn", "data": data or TINY_DATA, "student": {"width": 0.5},
        "stages": stages or [{"stage": "distill", "epochs": 1, "lr": 0.01},
                             {"stage": "quantize", "mode": "ptq", "calibration_batches": 2, "reduce_range": True},
                             {"stage": "export"}],
        "targets": [str(target)]})


def npz_data(path: Path, x: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 256)
    images = rng.random((256, 1, 16, 16), dtype=np.float32) * 0.2
    for c in range(4):  # each class brightens its own quarter: learnable
        images[labels == c, :, (c // 2) * 8:(c // 2) * 8 + 8, (c % 2) * 8:(c % 2) * 8 + 8] += 0.8
    np.savez(path, x=images if x is None else x, y=labels)
    return path


# ------------------------------------------------------------------ 1. nothing from untrusted files runs
def test_a_planted_pt2_given_to_bench_is_refused_and_runs_nothing(tmp_path):
    from edgekd.stages.exporting import export_program

    from ..test_bench import Plain, plant_pt2

    clean, evil, marker = tmp_path / "m.pt2", tmp_path / "evil.pt2", tmp_path / "PWNED"
    export_program(Plain().eval(), torch.randn(1, 3, 16, 16), clean)
    plant_pt2(clean, evil, marker, "sample_inputs/model.pt")
    before = evil.read_bytes()
    result = invoke("bench", evil, "--runs", "3")
    assert result.exit_code == 2 and "system" in one_line_error(result.output)
    assert not marker.exists() and evil.read_bytes() == before


def test_expect_sha256_is_checked_before_the_file_is_opened(tmp_path, target, tiny_teacher):
    wrong = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target), "--out", tmp_path / "a",
                   "--expect-sha256", "0" * 64, "--dry-run")
    assert wrong.exit_code == 2 and "SHA-256 is" in one_line_error(wrong.output)
    from edgekd.fileio import file_sha256

    right = invoke("compress", tiny_teacher, "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "b",
                   "--expect-sha256", file_sha256(tiny_teacher).upper(), "--dry-run")
    assert right.exit_code == 0, right.output


def test_allow_global_opens_a_pickle_with_one_named_class_and_nothing_else(tmp_path, target):
    """A state dict pickled with a custom class inside: refused, opened with --allow-global for that class,
    while a planted os.system stays refused with the same flag."""
    ckpt = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": TinyCNN(num_classes=4).state_dict(), "meta": TINY_META}, ckpt)
    r = recipe(tmp_path / "r.yaml", target, teacher_check=False)  # an untrained teacher, on purpose
    refused = invoke("compress", ckpt, "--recipe", r, "--out", tmp_path / "a", "--dry-run")
    assert refused.exit_code == 2 and "--allow-global" in one_line_error(refused.output)
    allowed = invoke("compress", ckpt, "--recipe", r, "--out", tmp_path / "b", "--dry-run",
                     "--allow-global", "tests.faults.test_faults.RunInfo")
    assert allowed.exit_code == 0, allowed.output


class RunInfo:
    """A small record class some training scripts pickle beside the weights."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs


TINY_META = RunInfo(epochs=3)


def test_trust_checkpoint_says_what_it_allows(tmp_path, target):
    ckpt = tmp_path / "module.pt"
    torch.save(TinyCNN(num_classes=4), ckpt)
    result = invoke("compress", ckpt, "--recipe", recipe(tmp_path / "r.yaml", target, teacher_check=False),
                    "--out", tmp_path / "a", "--dry-run", "--trust-checkpoint")
    assert result.exit_code == 0 and "code execution allowed" in result.output


def test_pickles_are_refused_on_a_torch_whose_weights_only_is_unsafe(tmp_path):
    from edgekd.models.checkpoint import check_torch_is_safe
    from edgekd.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"torch 2\.9\.1\+cpu cannot unpickle files safely.*CVE-2026-24747"):
        check_torch_is_safe(tmp_path / "x.pt", "2.9.1+cpu")
    check_torch_is_safe(tmp_path / "x.pt", "2.10.0")


# ------------------------------------------------------------------ 2. non-finite values stop the stage
def test_one_nan_pixel_in_the_data_is_exit_2_naming_the_sample(tmp_path, target, tiny_teacher):
    path = npz_data(tmp_path / "d.npz")
    with np.load(path) as z:
        x, y = z["x"].copy(), z["y"]
    x[17, 0, 3, 3] = np.nan
    np.savez(path, x=x, y=y)
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target),
                    "--data", f"npz:{path}", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "holds NaN or Inf" in one_line_error(result.output)
    assert not (tmp_path / "run" / "report.json").exists()


def test_nan_parity_is_a_failed_export_not_a_pass(tmp_path):
    from edgekd.stages.export.config import ExportConfig
    from edgekd.errors import StageError
    from edgekd.stages.exporting import export_fp32
    from edgekd.stages.export.stage import TorchSide, compare_with_torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    x = torch.rand(8, 1, 4, 4)
    export_fp32(model, x[:1], tmp_path / "m.onnx", 17)
    ref = model(x).detach().numpy()
    ref[3, 1] = np.nan  # the reference side computed NaN: max |diff| would read "nan" and pass
    with pytest.raises(StageError, match="NaN/Inf logits on 1 of 8"):
        compare_with_torch(tmp_path / "m.onnx", TorchSide(ref, x), "fp32", ExportConfig(stage="export"), "m")


def test_a_diverged_one_step_training_is_not_saved_as_a_finished_stage(tmp_path, target, tiny_teacher):
    r = recipe(tmp_path / "r.yaml", target, stages=[{"stage": "distill", "epochs": 1, "lr": 1e30}, {"stage": "export"}])
    result = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "diverged" in one_line_error(result.output) or "became" in result.output
    assert not (tmp_path / "run" / "stages" / "00-distill" / "stage.json").exists()


def test_a_collapsed_quantized_model_fails_its_stage(tmp_path, target, tiny_teacher):
    stages = [{"stage": "distill", "epochs": 2, "lr": 0.01},
              {"stage": "quantize", "mode": "qat", "epochs": 1, "lr": 50.0, "calibration_batches": 2},
              {"stage": "export"}]
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target, stages=stages),
                    "--out", tmp_path / "run")
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert "fail_drop" in line or "diverged" in line or "NaN" in line
    assert not (tmp_path / "run" / "stages" / "01-quantize" / "stage.json").exists()


# ------------------------------------------------------------------ 3. the run directory as a transaction
def test_changed_data_under_resume_reruns_the_stages_and_says_why(tmp_path, target, tiny_teacher):
    data = npz_data(tmp_path / "d.npz")
    args = ["compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target), "--data", f"npz:{data}",
            "--out", tmp_path / "run"]
    assert invoke(*args).exit_code == 0
    same = invoke(*args, "--resume")
    assert same.exit_code == 0 and "(resumed from" in same.output
    with np.load(data) as z:
        x, y = z["x"].copy(), z["y"]
    x[0] = 1.0 - x[0]  # one image changed, same path, same size
    np.savez(data, x=x, y=y)
    changed = invoke(*args, "--resume")
    assert changed.exit_code == 0 and "(resumed from" not in changed.output
    assert "again: its config or inputs changed" in changed.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"]["data"] and manifest["status"] == "complete"
    assert not any(s["reused"] for s in manifest["stages"])


def test_a_moved_run_resumes_and_a_copied_run_uses_its_own_files(tmp_path, target, tiny_teacher):
    r = recipe(tmp_path / "r.yaml", target)
    assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "a").exit_code == 0
    shutil.move(tmp_path / "a", tmp_path / "moved")
    moved = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "moved", "--resume")
    assert moved.exit_code == 0 and moved.output.count("(resumed from") == 3, moved.output
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    shutil.rmtree(tmp_path / "moved")  # the copy must not read the original's files
    copied = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "copy", "--resume")
    assert copied.exit_code == 0 and copied.output.count("(resumed from") == 3, copied.output
    assert str(tmp_path / "moved") not in (tmp_path / "copy" / "stages" / "01-quantize" / "stage.json").read_text()


def test_a_run_killed_during_measurement_is_refused_by_report_and_gate(tmp_path, target, tiny_teacher, monkeypatch):
    import edgekd.measure.targets as per_target

    real, calls = per_target.measure, []

    def killed_at_the_second_row(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as SIGKILL mid-measurement leaves it: some rows written, not all
        return real(*a, **k)

    r = recipe(tmp_path / "r.yaml", target)
    monkeypatch.setattr(per_target, "measure", killed_at_the_second_row)
    assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run").exit_code == 130
    monkeypatch.setattr(per_target, "measure", real)
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    gate = invoke("gate", tmp_path / "run", "--budget", budget)
    assert gate.exit_code == 2 and "did not finish" in one_line_error(gate.output)
    report = invoke("report", tmp_path / "run")
    assert report.exit_code == 2 and "did not finish" in one_line_error(report.output)
    finished = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run", "--resume")
    assert finished.exit_code == 0
    assert invoke("gate", tmp_path / "run", "--budget", budget).exit_code == 0


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgekd.artifacts.rundir import RunLock
    lock = RunLock(Path(sys.argv[1])).acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def test_force_on_a_directory_another_run_is_writing_is_refused_and_deletes_nothing(tmp_path, target, tiny_teacher):
    r = recipe(tmp_path / "r.yaml", target)
    assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run").exit_code == 0
    before = files_under(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
        forced = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run", "--force")
        assert forced.exit_code == 2 and f"pid {holder.pid}" in one_line_error(forced.output)
        assert files_under(tmp_path / "run") == before
    finally:
        holder.kill()
        holder.wait()
    assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run", "--force").exit_code == 0


def test_a_killed_runs_temporaries_do_not_survive_a_resume_and_outputs_follow_the_umask(tmp_path, target,
                                                                                      tiny_teacher):
    r = recipe(tmp_path / "r.yaml", target)
    old = os.umask(0o022)
    try:
        assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run").exit_code == 0
        leftover = tmp_path / "run" / "stages" / "00-distill" / ".model.safetensors.abc123.tmp.safetensors"
        leftover.write_bytes(b"")  # what SIGKILL during a write leaves
        assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run", "--resume").exit_code == 0
    finally:
        os.umask(old)
    assert not leftover.exists() and not list((tmp_path / "run").rglob(".*.tmp*"))
    assert (tmp_path / "run" / "report.json").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ 4. one exit-code table
def test_a_corrupt_report_json_is_bad_input_not_a_violated_budget(tiny_run, tmp_path):
    import shutil

    from ..conftest import reseal

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report = json.loads((run / "report.json").read_text())
    del report["results"][0]["status"]
    (run / "report.json").write_text(json.dumps(report))
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 100})
    result = invoke("gate", run / "report.json", "--budget", budget)
    assert result.exit_code == 2 and "report.json changed since the run completed" in one_line_error(result.output)
    reseal(run)  # even as the run's own record, a row without its status is bad input
    result = invoke("gate", run / "report.json", "--budget", budget)
    assert result.exit_code == 2 and "results[0] lacks key 'status'" in one_line_error(result.output)


def test_a_bug_is_exit_3_with_one_line_and_the_traceback_under_edgekd_debug(tiny_run, tmp_path, monkeypatch):
    import edgekd.report.build as report

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(report, "build_report", broken)
    result = invoke("report", tiny_run)
    assert result.exit_code == 3 and "internal error: ZeroDivisionError: a bug" in one_line_error(result.output)
    monkeypatch.setenv("EDGEKD_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        invoke("report", tiny_run)


def test_bench_whose_only_target_is_unavailable_is_exit_1(tiny_run):
    result = invoke("bench", tiny_run / "models" / "student-fp32.onnx", "--target", "gpu-tensorrt", "--runs", "3")
    assert result.exit_code == 1 and "unavailable" in result.output


# ------------------------------------------------------------------ 5. --dry-run opens every input
@pytest.mark.parametrize("fault, message", [
    ("truncated checkpoint", "not a valid safetensors file"),
    ("npz that is not a zip", "not an .npz file"),
    ("missing extra teacher", "teacher checkpoint file not found"),
])
def test_dry_run_finds_bad_inputs_before_any_training(tmp_path, target, tiny_teacher, fault, message):
    ckpt, data = tmp_path / "t.safetensors", npz_data(tmp_path / "d.npz")
    shutil.copyfile(tiny_teacher, ckpt)
    stages = None
    if fault == "truncated checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif fault == "npz that is not a zip":
        data.write_bytes(b"x,y\n1,2\n")
    else:
        stages = [{"stage": "distill", "epochs": 1, "loss": [
            {"name": "multi-teacher", "teachers": [{"checkpoint": str(tmp_path / "gone.safetensors")}]}]},
            {"stage": "export"}]
    r = recipe(tmp_path / "r.yaml", target, stages=stages)
    result = invoke("compress", ckpt, "--recipe", r, "--data", f"npz:{data}", "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 2 and message in one_line_error(result.output)
    assert not (tmp_path / "run" / "stages").exists()


# ------------------------------------------------------------------ 6. disk, annotations, YAML, bounds, labels
def test_a_full_disk_is_exit_2_and_leaves_no_half_written_file(tmp_path, target, tiny_teacher, monkeypatch):
    import safetensors.torch

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)  # what the filesystem says when it is full
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target), "--out", tmp_path / "run")
    assert result.exit_code == 2 and "the disk is full" in one_line_error(result.output)
    assert not list((tmp_path / "run").rglob(".*.tmp*"))
    assert not (tmp_path / "run" / "stages" / "00-distill" / "stage.json").exists()


def test_too_little_free_space_is_refused_before_any_work(tmp_path, target, tiny_teacher, monkeypatch):
    import edgekd.artifacts.rundir as rundir

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target), "--out", tmp_path / "run")
    assert result.exit_code == 2 and "1 MB free, and this run needs about" in one_line_error(result.output)
    assert not (tmp_path / "run" / "stages").exists()


def test_a_newline_in_a_name_cannot_inject_a_workflow_command(tiny_run, tmp_path, monkeypatch):
    from edgekd.report.gate import Verdict, ci_annotations

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    hostile = Verdict("max_latency_ms.tiny\n::add-mask::x.p50", False, "p50 2.0 > 1.0 on tiny\r\n::stop-commands::t")
    (line,) = ci_annotations([hostile])
    assert "\n" not in line and "\r" not in line and line.startswith("::error title=")
    assert "%0A%3A%3Aadd-mask%3A%3Ax" in line and "%0D%0A::stop-commands::t" in line
    # and an error naming the hostile target stays on its one line
    budget = write_yaml(tmp_path / "b.yaml", {"max_latency_ms": {"tiny-ort\n::add-mask::x": {"p50": 1.0}}})
    result = invoke("gate", tiny_run, "--budget", budget)
    assert result.exit_code == 2 and not [x for x in result.output.splitlines() if x.startswith("::")]
    one_line_error(result.output)


def test_a_yaml_alias_bomb_is_one_short_line(tmp_path, tiny_teacher):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    result = invoke("compress", tiny_teacher, "--recipe", path, "--out", tmp_path / "run")
    line = one_line_error(result.output)
    assert result.exit_code == 2 and "aliases" in line and len(line) < 300


def test_a_binary_recipe_is_exit_2(tmp_path, tiny_teacher):
    path = tmp_path / "r.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    result = invoke("compress", tiny_teacher, "--recipe", path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "not UTF-8 text" in one_line_error(result.output)


def test_threads_beyond_the_machines_cpus_are_refused(tiny_run):
    result = invoke("bench", tiny_run / "models" / "student-fp32.onnx", "--target", "cpu-onnxruntime",
                    "--threads", "100000")
    assert result.exit_code == 2 and "exceeds the" in one_line_error(result.output)


@pytest.mark.parametrize("labels, message", [
    (lambda y: np.where(np.arange(len(y)) == 5, 99, y), "label 99 is out of range of the other labels (0..3"),
    (lambda y: y.astype(np.float32) + 0.5, "labels must be integers"),
])
def test_bad_labels_are_about_the_data_not_the_checkpoint(tmp_path, target, tiny_teacher, labels, message):
    path = npz_data(tmp_path / "d.npz")
    with np.load(path) as z:
        x, y = z["x"], z["y"]
        np.savez(tmp_path / "bad.npz", x=x, y=labels(y))
    data = {**TINY_DATA, "source": "npz", "path": str(tmp_path / "bad.npz"), "classes": 4}
    data.pop("samples")
    data.pop("image_size")
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target, data=data),
                    "--out", tmp_path / "run")
    line = one_line_error(result.output)
    assert result.exit_code == 2 and message in line and "checkpoint" not in line


# ------------------------------------------------------------------ 7. QAT resume
def test_a_qat_killed_between_epochs_resumes_to_the_same_weights_bit_for_bit(tmp_path, target, tiny_teacher,
                                                                             monkeypatch):
    """Brevitas' load_state_dict replaces its activation-scale Parameters; with the optimizer made before
    the load, a resumed QAT trained orphans and froze every activation scale (differences up to 2.5e-3)."""
    from safetensors.torch import load_file

    import edgekd.train.loop as loop
    from edgekd.artifacts.artifact import stage_artifacts

    r = recipe(tmp_path / "r.yaml", target, stages=[
        {"stage": "distill", "epochs": 1, "lr": 0.01},
        {"stage": "quantize", "mode": "qat", "epochs": 3, "lr": 1e-3, "calibration_batches": 2},
        {"stage": "export"}])
    assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "ref").exit_code == 0
    real, calls = loop.checked_accuracy, []

    def killed_validating_qat_epoch_2(*a):
        calls.append(1)
        if len(calls) == 3:  # 1: distill's epoch, 2: QAT epoch 1 (saved), 3: QAT epoch 2
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(loop, "checked_accuracy", killed_validating_qat_epoch_2)
    assert invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run").exit_code == 130
    monkeypatch.setattr(loop, "checked_accuracy", real)
    resumed = invoke("compress", tiny_teacher, "--recipe", r, "--out", tmp_path / "run", "--resume")
    assert resumed.exit_code == 0 and "quantize (QAT): resuming after epoch 1/3" in resumed.output

    def weights(run: str) -> dict:
        return load_file(stage_artifacts(tmp_path / run / "stages" / "01-quantize")[0].path + "/model.safetensors")

    ref, got = weights("ref"), weights("run")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_an_out_directory_the_user_cannot_write_is_exit_2(tmp_path, target, tiny_teacher):
    if os.geteuid() == 0:  # root writes anywhere: point --out below a file instead, which no one can create
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "run"
    result = invoke("compress", tiny_teacher, "--recipe", recipe(tmp_path / "r.yaml", target), "--out", out)
    assert result.exit_code == 2, result.output
    one_line_error(result.output)
