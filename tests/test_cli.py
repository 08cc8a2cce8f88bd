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
    assert "kd: Vanilla KD: Hinton" in losses and "\n    keys: temperature=4.0, alpha=0.7" in losses
    assert "\\n" not in losses  # the keys and needs go on lines of their own, not as an escaped newline
    assert "pskd: " in losses and "needs: labels" in losses
    from edgekd.losses import LOSSES

    documented = [line.split(":")[0] for line in losses.splitlines() if not line.startswith(" ")]
    assert documented == LOSSES.names()  # every loss, in registry order, each with a paper line
    tasks = invoke("list", "tasks").output
    assert "classification: scored by top-1 accuracy; default loss kd" in tasks
    assert "embedding: scored by mean cosine to the teacher's embeddings; default loss embedding-cosine" in tasks
    assert "detection: scored by COCO mAP@[.5:.95]; default loss detection-score-kd" in tasks
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


def test_compare_prints_two_runs_side_by_side_and_exits_1_when_b_regressed(tiny_run, tmp_path):
    import json as _json

    same = invoke("compare", tiny_run, tiny_run, "--json", tmp_path / "same.json")
    assert same.exit_code == 0 and "B did not regress" in same.output, same.output
    assert _json.loads((tmp_path / "same.json").read_text())["regressed"] is False

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    report = _json.loads((other / "report.json").read_text())
    for r in report["results"]:
        if r["variant"] == "student-int8" and r["status"] == "ok":  # B's student-int8 twice as slow
            r["latency_ms"]["p50"] *= 2
            r["latency_samples_ms"] = [t * 2 for t in r["latency_samples_ms"]]
    (other / "report.json").write_text(_json.dumps(report))
    assert invoke("compare", tiny_run, other).exit_code == 2  # an edited run is refused ...
    reseal(other)  # ... unless it is another run's own record
    result = invoke("compare", tiny_run, other, "--json", tmp_path / "c.json")
    assert result.exit_code == 1, result.output
    rows = [line for line in result.output.splitlines() if "student-int8" in line]
    assert rows and all("2.000" in line and "p50 2.000x A" in line for line in rows)
    teacher = [line for line in result.output.splitlines() if "teacher-fp32" in line]
    assert teacher and all("1.000" in line for line in teacher)
    doc = _json.loads((tmp_path / "c.json").read_text())
    assert doc["schema"] == "edgekd.compare/1" and doc["regressed"] is True
    slow = [r for r in doc["rows"] if r["variant"] == "student-int8"]
    assert all(1.0 < r["p50_ratio_interval"][0] < 2.0 < r["p50_ratio_interval"][1] and r["regressions"] for r in slow), slow
    sizes = {r["variant"]: r["size_mb_a"] for r in doc["rows"]}
    assert 0 < sizes["student-int8"] < sizes["teacher-fp32"] < 1  # in MB, not bytes
    assert not any(r["regressions"] for r in doc["rows"] if r["variant"] != "student-int8")
    missing = invoke("compare", tiny_run, tmp_path / "nowhere")
    assert missing.exit_code == 2


def test_the_example_workflow_parses_and_its_edgekd_commands_run(tiny_teacher, tiny_files, tmp_path, monkeypatch):
    """examples/github-actions.yml, a maintained template (issue 26): main saves the baseline, a pull request
    is gated against it; both jobs cache pip and ~/.cache/edgekd, have timeouts, the workflow has
    concurrency and least permissions, the JUnit file is published as a check and the report linked in
    the summary. Each job's edgekd commands, run here in order with the tiny files, do what they say."""
    import os
    import shlex

    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[1] / "examples" / "github-actions.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "paths" in triggers["pull_request"]
    assert workflow["permissions"] == {"contents": "read", "checks": "write", "actions": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    jobs = workflow["jobs"]
    for job in jobs.values():
        assert job["timeout-minutes"] <= 120
        uses = [s.get("uses", "") for s in job["steps"]]
        assert any(s.get("with", {}).get("cache") == "pip" for s in job["steps"])
        assert any(s.get("with", {}).get("path") == "~/.cache/edgekd" for s in job["steps"]), uses
    gate_steps = jobs["gate"]["steps"]
    assert any("junit" in s.get("uses", "") and s["with"]["report_paths"] == "gate.xml" for s in gate_steps)
    assert any("GITHUB_STEP_SUMMARY" in str(s.get("run", "")) and "artifact-url" in s["run"] for s in gate_steps)
    assert any(s.get("uses", "").startswith("actions/cache/save") for s in jobs["baseline"]["steps"])
    assert any(s.get("uses", "").startswith("actions/cache/restore") for s in gate_steps)

    def commands(job: str) -> list[str]:
        return [s["run"] for s in jobs[job]["steps"] if str(s.get("run", "")).startswith("edgekd ")]

    assert [c.split()[1] for c in commands("baseline")] == ["compress", "baseline"]
    assert [c.split()[1] for c in commands("gate")] == ["compress", "gate"]
    main_dir, pr_dir = tmp_path / "main", tmp_path / "pr"
    main_dir.mkdir(), pr_dir.mkdir()
    env = {"CHECKPOINT": str(tiny_teacher), "RECIPE": str(tiny_files["recipe"]),
           "BUDGET": str(write_yaml(tmp_path / "budget.yaml", {"max_size_ratio": 1.0}))}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(main_dir)
    for command in commands("baseline"):
        result = invoke(*shlex.split(os.path.expandvars(command))[1:])
        assert result.exit_code == 0, (command, result.output)
    shutil.copytree(main_dir / "baseline", pr_dir / "baseline")  # what the cache carries from main to the PR
    monkeypatch.chdir(pr_dir)
    for command in commands("gate"):
        # the PR's run times the same tiny files again on a loaded test machine: the wiring is tested here,
        # the latency rule's power in benchmarks/gate_power.py (test_baseline.py uses --min-effect 3 too)
        command = command.replace("--min-effect 0.10", "--min-effect 3")
        result = invoke(*shlex.split(os.path.expandvars(command))[1:])
        assert result.exit_code == 0, (command, result.output)
    assert (pr_dir / "gate.xml").is_file() and (pr_dir / "run" / "verdicts.json").is_file()


def test_dash_h_and_version_as_every_cli_has_them():
    from edgekd.version import __version__

    for flag in ("--version", "-V"):
        result = invoke(flag)
        assert result.exit_code == 0 and result.output.strip() == f"edgekd {__version__}"
    for args in (["-h"], ["compress", "-h"], ["gate", "-h"]):
        result = invoke(*args)
        assert result.exit_code == 0 and "Usage: edgekd" in result.output, args
