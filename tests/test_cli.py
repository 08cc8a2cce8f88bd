"""Every CLI command's happy path through CliRunner, and report re-rendering from files only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import invoke, reseal, write_yaml


def test_list_each_kind():
    assert "default" in invoke("list", "recipes").output
    out = invoke("list", "targets").output
    assert "cpu-onnxruntime" in out and "cpu-openvino" in out
    backends = invoke("list", "backends").output
    assert "onnxruntime: available" in backends and "openvino: available" in backends
    assert "tensorrt: unavailable" in backends and "pip install 'edgekd[tensorrt]'" in backends
    assert "torch: available" in backends and "(providers: " in backends and "(devices: CPU" in backends
    losses = invoke("list", "losses").output
    assert "kd: Vanilla KD: Hinton" in losses and "keys: temperature=4.0, alpha=0.7" in losses
    assert "pskd: " in losses and "needs: labels" in losses
    from edgekd.losses import LOSSES

    documented = [line.split(":")[0] for line in losses.splitlines() if not line.startswith(" ")]
    assert documented == LOSSES.names()  # every loss, in registry order, each with a paper line
    tasks = invoke("list", "tasks").output
    assert "classification: scored by top-1 accuracy; default loss kd" in tasks
    assert "embedding: scored by mean cosine to the teacher's embeddings; default loss embedding-cosine" in tasks
    assert invoke("list", "plugins").exit_code == 2


def test_help_documents_every_option():
    for cmd, options in {"compress": ["--arch", "--recipe", "--target", "--data", "--out", "--budget",
                                      "--trust-checkpoint", "--dry-run", "--resume"],
                         "bench": ["--target", "--warmup", "--runs", "--json", "--seconds", "--threads", "--batch",
                                   "--shape", "--emit-native"],
                         "report": ["--format"], "gate": ["--budget", "--junit"]}.items():
        out = invoke(cmd, "--help").output
        for opt in options:
            assert opt in out, (cmd, opt)


def test_compress_prints_a_table_per_target(tiny_run, tiny_teacher, tiny_files, tmp_path):
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", tmp_path / "r",
                    "--target", tiny_files["ov"])
    assert result.exit_code == 0
    assert "tiny-ov (openvino, CPU)" in result.output and "student-int8" in result.output


def test_bench_measures_a_file_on_each_target(tiny_run, tiny_files, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke("bench", tiny_run / "models" / "student-int8.onnx", "--target", tiny_files["ort"],
                    "--target", tiny_files["ov"], "--runs", "30", "--warmup", "2", "--json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["target"] for r in data] == ["tiny-ort", "tiny-ov"]
    assert all(r["status"] == "ok" and r["precision"] == "int8" and r["latency_ms"]["runs"] == 30 for r in data)
    assert invoke("bench", tmp_path / "missing.onnx").exit_code == 2


def test_bench_unavailable_backend_is_reported_not_crashed(tiny_run):
    """Reported with its reason, beside the targets that ran; when it is the only target nothing was
    measured, and the exit code says so (1), as a CI job needs."""
    model = tiny_run / "models" / "student-fp32.onnx"
    alone = invoke("bench", model, "--target", "gpu-tensorrt", "--runs", "5")
    assert alone.exit_code == 1 and "unavailable" in alone.output and "Traceback" not in alone.output
    beside = invoke("bench", model, "--target", "gpu-tensorrt", "--target", "cpu-onnxruntime", "--runs", "5")
    assert beside.exit_code == 0 and "unavailable" in beside.output


def test_report_rerenders_from_files_only(tiny_run, tmp_path):
    copy = tmp_path / "copied-run"
    shutil.copytree(tiny_run, copy)
    for name in ("report.json", "report.md", "report.html", "tradeoff.png"):
        (copy / name).unlink()
    md = invoke("report", copy)
    assert md.exit_code == 0 and "## tiny-ort" in md.output and "| student-int8 | int8 |" in md.output
    assert json.loads(invoke("report", copy, "--format", "json").output)["schema"] == "edgekd.report/1"
    assert invoke("report", copy, "--format", "html").exit_code == 0
    assert "<table>" in (copy / "report.html").read_text() and (copy / "tradeoff.png").stat().st_size > 1000
    assert invoke("report", tmp_path / "nope").exit_code == 2


def test_compare_prints_two_runs_side_by_side(tiny_run, tmp_path):
    import json as _json

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    report = _json.loads((other / "report.json").read_text())
    for r in report["results"]:
        if r["variant"] == "student-int8" and r["status"] == "ok":
            r["latency_ms"]["p50"] *= 2  # B's student-int8 twice as slow
    (other / "report.json").write_text(_json.dumps(report))
    assert invoke("compare", tiny_run, other).exit_code == 2  # an edited run is refused ...
    reseal(other)  # ... unless it is another run's own record
    result = invoke("compare", tiny_run, other)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "student-int8" in line]
    assert rows and all("2.000" in line for line in rows)
    teacher = [line for line in result.output.splitlines() if "teacher-fp32" in line]
    assert teacher and all("1.000" in line for line in teacher)
    missing = invoke("compare", tiny_run, tmp_path / "nowhere")
    assert missing.exit_code == 2


def test_the_example_workflow_parses_and_its_edgekd_commands_run(tiny_teacher, tiny_files, tmp_path, monkeypatch):
    """examples/github-actions.yml: valid YAML, and each of its edgekd steps, run here with the tiny files
    in place of the user's, does what the comments say (compress ok; gate against a fresh baseline)."""
    import os
    import shlex

    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[1] / "examples" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["compress-and-gate"]["steps"]
    commands = [s["run"] for s in steps if str(s.get("run", "")).startswith("edgekd ")]
    assert [c.split()[1] for c in commands] == ["compress", "gate"]
    assert set(workflow["env"]) == {"CHECKPOINT", "RECIPE", "BUDGET", "BASELINE"}
    monkeypatch.chdir(tmp_path)
    env = {"CHECKPOINT": str(tiny_teacher), "RECIPE": str(tiny_files["recipe"]),
           "BUDGET": str(write_yaml(tmp_path / "budget.yaml", {"max_size_ratio": 1.0})),
           "BASELINE": str(tmp_path / "baseline.json")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    compress = invoke(*shlex.split(os.path.expandvars(commands[0]))[1:])
    assert compress.exit_code == 0, compress.output
    assert invoke("baseline", "save", "run", "--out", env["BASELINE"]).exit_code == 0
    gate = invoke(*shlex.split(os.path.expandvars(commands[1]))[1:])
    assert gate.exit_code == 0, gate.output
    assert (tmp_path / "run" / "gate.xml").is_file()


def test_dash_h_and_version_as_every_cli_has_them():
    from edgekd.version import __version__

    for flag in ("--version", "-V"):
        result = invoke(flag)
        assert result.exit_code == 0 and result.output.strip() == f"edgekd {__version__}"
    for args in (["-h"], ["compress", "-h"], ["gate", "-h"]):
        result = invoke(*args)
        assert result.exit_code == 0 and "Usage: edgekd" in result.output, args
