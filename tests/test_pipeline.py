"""End to end: the tiny recipe through every stage, both CPU backends, report, and --resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd.report.build import SCHEMA

from .conftest import FAST_LATENCY, invoke, write_yaml

VARIANTS = ["teacher-fp32", "student-fp32", "student-int8"]


def test_run_directory_follows_the_contract(tiny_run):
    for name in ("recipe.resolved.yaml", "manifest.json", "report.json", "report.md", "report.html", "tradeoff.png"):
        assert (tiny_run / name).is_file(), name
    for v in VARIANTS:
        assert (tiny_run / "models" / f"{v}.onnx").is_file()
        for t in ("tiny-ort", "tiny-ov"):
            assert (tiny_run / "measurements" / f"{v}@{t}.json").is_file()
    stages = sorted(p.name for p in (tiny_run / "stages").iterdir())
    assert stages == ["00-distill", "01-quantize", "02-export"]


def test_report_json_has_contract_keys_and_backend_measured_accuracy(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["schema"] == SCHEMA
    assert [v["name"] for v in report["variants"]] == VARIANTS
    for v in report["variants"]:
        assert {"name", "onnx", "size_bytes", "params", "macs", "accuracy"} <= v.keys()
        assert v["size_bytes"] == (tiny_run / v["onnx"]).stat().st_size
    assert len(report["results"]) == 6
    for r in report["results"]:
        assert {"variant", "target", "backend", "device", "precision", "status", "latency_ms",
                "throughput_ips", "accuracy", "error"} <= r.keys()
        assert r["status"] == "ok", r["error"]
        assert {"min", "mean", "p50", "p90", "p95", "p99", "max", "std", "cov"} <= r["latency_ms"].keys()
        assert {"cold_ms", "peak_rss_mb", "fingerprint", "settings", "throughput_batch"} <= r.keys()
        assert r["fingerprint"]["artifact_sha256"] and r["fingerprint"]["machine_id"]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["eval_samples"] > 0
        assert r["latency_ms"]["runs"] >= 20


def test_report_says_where_it_was_measured_and_lists_warnings(tiny_run):
    from edgekd.report.build import render_markdown

    report = json.loads((tiny_run / "report.json").read_text())
    machine_id = report["results"][0]["fingerprint"]["machine_id"]
    report["results"][0]["warnings"] = ["latency coefficient of variation 9.0% exceeds 5%"]
    md = render_markdown(report)
    assert "## Measurement notes" in md and f"machine {machine_id}" in md
    first = report["results"][0]
    assert f"- {first['variant']} on {first['target']}: latency coefficient of variation 9.0% exceeds 5%" in md


def test_int8_student_runs_int8_layers_on_both_backends(tiny_run):
    for target in ("tiny-ort", "tiny-ov"):
        r = json.loads((tiny_run / "measurements" / f"student-int8@{target}.json").read_text())
        assert r["precision"] == "int8"
        assert r["int8_layers"]["total"] == 3  # two convs + the classifier
        assert r["int8_layers"]["int8"] == r["int8_layers"]["total"], r["int8_layers"]
        fp = json.loads((tiny_run / "measurements" / f"student-fp32@{target}.json").read_text())
        assert fp["int8_layers"]["int8"] == 0


def test_openvino_precision_hint_is_read_back(tiny_run):
    r = json.loads((tiny_run / "measurements" / "teacher-fp32@tiny-ov.json").read_text())
    assert r["precision"] == "fp32"
    assert r["settings"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert r["settings"]["INFERENCE_NUM_THREADS"] == "1"


def test_int8_weights_are_stored_as_int8_and_export_parity_recorded(tiny_run):
    import onnx

    graph = onnx.load(str(tiny_run / "models" / "student-int8.onnx")).graph
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert len(int8_weights) == 3
    assert not [n for n in graph.node if n.op_type == "Clip"]  # folded, or OpenVINO runs the convs in float
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    models = manifest["models"]
    assert models["student-fp32"]["meta"]["parity"]["max_abs_diff"] <= models["student-fp32"]["meta"]["parity"]["tolerance"]
    int8_parity = models["student-int8"]["meta"]["parity"]
    assert int8_parity["top1_agreement_decisive"] >= 0.97 and int8_parity["decisive_samples"] >= int8_parity["samples"] // 2
    assert "top1_agreement" in int8_parity and int8_parity["tie_margin"] >= 0
    assert manifest["checkpoint"]["trusted_checkpoint"] is False


def test_existing_run_dir_needs_resume_or_force(tiny_run, tiny_teacher, tiny_files):
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", tiny_run)
    assert result.exit_code == 2
    assert "--resume" in result.output


def test_resume_reuses_finished_stages(tiny_teacher, tiny_files, tmp_path):
    out = tmp_path / "run"
    assert invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", out,
                  "--target", tiny_files["ort"]).exit_code == 0
    (out / "stages" / "02-export" / "stage.json").unlink()  # as if killed during export
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", out,
                    "--target", tiny_files["ort"], "--resume")
    assert result.exit_code == 0, result.output
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert {s["stage"]: s["reused"] for s in stages} == {"distill": True, "quantize": True, "export": False}
    # wall time per stage (issue 26.6): what this run spent, in the console, the manifest and the report
    assert [s["seconds"] is None for s in stages] == [True, True, False] and stages[2]["seconds"] > 0
    assert "stage 3/3: export done in" in result.output
    report = (out / "report.md").read_text()
    assert "## Stages" in report and "| distill | student-fp32 | reused (--resume) |" in report
    assert "| export |" in report and " s |" in report.split("| export |")[1].splitlines()[0]
    assert "<h2>Stages</h2>" in (out / "report.html").read_text()


@pytest.mark.parametrize("seconds,shown", [(0.04, "0.0 s"), (42.0, "42.0 s"), (869.4, "14 min 29 s"),
                                           (7500, "2 h 05 min")])
def test_wall_time_reads_as_a_person_says_it(seconds, shown):
    from edgekd.progress import wall_time

    assert wall_time(seconds) == shown


def test_dry_run_writes_resolved_recipe_only(tiny_teacher, tiny_files, tmp_path):
    out = tmp_path / "dry"
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", out, "--dry-run",
                    "--target", "cpu-openvino")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name != ".edgekd.lock") == ["recipe.resolved.yaml"]
    assert "nothing trained" in result.output
    assert "cpu-openvino" in (out / "recipe.resolved.yaml").read_text()


def test_force_replaces_only_an_edgekd_run_directory(tiny_teacher, tiny_files, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", keep, "--force", "--dry-run")
    assert result.exit_code == 2 and "replaces only an edgekd run directory" in result.output
    assert (keep / "notes.txt").read_text() == "precious"
    run = tmp_path / "run"
    assert invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", run, "--dry-run").exit_code == 0
    (run / "stale.txt").write_text("old")
    # issue 22: a dry run checks, it does not replace: the folder is left exactly as it was
    dry = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", run, "--force", "--dry-run")
    assert dry.exit_code == 0 and "nothing written" in dry.output and (run / "stale.txt").exists()
    assert invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", run, "--force",
                  "--target", tiny_files["ort"]).exit_code == 0
    assert not (run / "stale.txt").exists() and (run / "manifest.json").is_file()


def test_every_backend_result_carries_its_parity_with_the_torch_model(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    for r in report["results"]:
        p = r["parity"]
        assert p["samples"] == r["eval_samples"] and 0.0 <= p["top1_agreement"] <= 1.0
        if r["precision"] == "fp32":  # float kernels: the torch model's answers, to float rounding
            assert p["top1_agreement"] == 1.0 and p["sqnr_db"] > 40
        else:  # INT8 kernels against the fake-quantized model (its output is requantized: may match exactly)
            assert p["top1_agreement"] >= 0.9 and (p["sqnr_db"] is None or p["sqnr_db"] > 10)
    md = (tiny_run / "report.md").read_text()
    assert "| INT8 layers | parity | status |" in md and "% / " in md


def test_predict_keeps_each_output_although_openvino_reuses_its_buffer(tiny_run, tiny_files):
    from edgekd.backends import BACKENDS, predict
    from edgekd.backends import load_target

    compiled = BACKENDS.get("openvino")().compile(tiny_run / "models" / "student-fp32.onnx", load_target(tiny_files["ov"]))
    x = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    logits = predict(compiled, x)
    for i in range(3):
        np.testing.assert_allclose(logits[i], np.asarray(compiled(x[i:i + 1])).ravel(), atol=1e-6)
    assert not np.allclose(logits[0], logits[2])


def test_an_int8_file_running_mostly_in_float_is_flagged_in_the_report():
    from edgekd.report.build import table_rows

    def row(variant, precision, int8, total):
        return {"variant": variant, "target": "t", "precision": precision, "status": "ok", "accuracy": 1.0,
                "latency_ms": {"p50": 1.0, "p90": 1.0, "cov": 0.0}, "int8_layers": {"int8": int8, "total": total}}

    report = {"variants": [], "results": [row("a-int8", "int8", 1, 5), row("b-int8", "int8", 5, 5),
                                          row("c-fp32", "fp32", 0, 5)]}
    cells = [r["INT8 layers"] for r in table_rows(report, "t")]
    assert cells == ["1/5 MOSTLY FLOAT", "5/5", "0/5"]


def test_each_runtime_measures_its_own_int8_layout(tiny_run):
    import onnx

    manifest = json.loads((tiny_run / "manifest.json").read_text())
    meta = manifest["models"]["student-int8"]["meta"]
    assert meta["layouts"] == {"u8s8": "models/student-int8.u8s8.onnx"}
    assert meta["parity"]["u8s8"]["top1_agreement"] >= 0.97
    assert manifest["models"]["student-fp32"]["meta"]["layouts"] == {}
    ort_row = json.loads((tiny_run / "measurements" / "student-int8@tiny-ort.json").read_text())
    ov_row = json.loads((tiny_run / "measurements" / "student-int8@tiny-ov.json").read_text())
    assert ort_row["onnx"].endswith("models/student-int8.u8s8.onnx")
    assert ov_row["onnx"].endswith("models/student-int8.onnx")
    graph = onnx.load(ort_row["onnx"]).graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    activation_types = {zero_points[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert activation_types == {onnx.TensorProto.UINT8}


def test_int8_rows_are_timed_interleaved_against_their_fp32_variant(tiny_run):
    from edgekd.measure.int8_verdict import judge

    for target in ("tiny-ort", "tiny-ov"):
        row = json.loads((tiny_run / "measurements" / f"student-int8@{target}.json").read_text())
        versus = row["int8_vs_fp32"]
        assert versus["pairs"] == 20 and versus["ratio"] == pytest.approx(versus["p50_ms"] / versus["fp32_p50_ms"])
        assert "int8_vs_fp32" not in json.loads((tiny_run / "measurements" / f"student-fp32@{target}.json").read_text())
        judged = judge(row, versus, 1.0)  # what the default target (int8_max_ratio 1.0) would have said
        assert versus["ratio_low"] <= versus["ratio"] <= versus["ratio_high"]
        assert (judged["status"] == "failed") == (versus["ratio_low"] > 1.0)


def test_the_report_says_what_each_stage_did_and_stands_alone(tiny_run):
    """Issue 15.4/15.6: stage attribution in report.json/.md/.html; the HTML inlines its plot."""
    report = json.loads((tiny_run / "report.json").read_text())
    torch_steps = report["attribution"]["torch"]
    assert [s["stage"] for s in torch_steps] == ["teacher", "distill", "quantize"]
    distill, quantize = torch_steps[1], torch_steps[2]
    assert distill["change"] == pytest.approx(distill["test_accuracy_torch"] - torch_steps[0]["test_accuracy_torch"])
    assert quantize["change"] == pytest.approx(quantize["test_accuracy_torch"] - distill["test_accuracy_torch"])
    for target, steps in report["attribution"]["targets"].items():
        assert [(s["from"], s["to"], s["stages"]) for s in steps] == [
            ("teacher-fp32", "student-fp32", ["distill"]), ("student-fp32", "student-int8", ["quantize"])]
        rows = {r["variant"]: r for r in report["results"] if r["target"] == target}
        assert steps[1]["p50_ratio"] == pytest.approx(rows["student-int8"]["latency_ms"]["p50"]
                                                      / rows["student-fp32"]["latency_ms"]["p50"])
    md = (tiny_run / "report.md").read_text()
    assert "## What each stage did" in md and "| teacher-fp32 -> student-fp32 | distill |" in md
    page = (tiny_run / "report.html").read_text()
    assert "src='data:image/png;base64," in page and "tradeoff.png" not in page
    assert "<h2>What each stage did</h2>" in page


def test_the_pareto_front_keeps_only_rows_nothing_beats():
    from edgekd.report.plots import pareto_front

    def row(name, p50, acc, status="ok"):
        return {"variant": name, "status": status, "accuracy": acc, "latency_ms": {"p50": p50}}

    rows = [row("a", 1.0, 0.90), row("b", 2.0, 0.95), row("c", 3.0, 0.93), row("d", 0.5, 0.80),
            row("e", 0.4, 0.99, status="failed")]
    assert [r["variant"] for r in pareto_front(rows)] == ["d", "a", "b"]


def test_compress_repeats_latency_in_rounds_over_the_variants(tiny_teacher, tiny_files, tmp_path):
    target = write_yaml(tmp_path / "t.yaml", {"name": "rep-ort", "backend": "onnxruntime", "threads": 1,
                                              "latency": {**FAST_LATENCY, "repeats": 2}})
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--target", target,
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = [json.loads(p.read_text()) for p in (tmp_path / "run" / "measurements").glob("*.json")]
    assert len(rows) == 3 and all(len(r["repeats"]["p50_ms"]) == 2 for r in rows)
    assert all(r["repeats"]["p50_ms"][0] == r["latency_ms"]["p50"] for r in rows)
    assert all(r["repeats"]["mean_ms"][0] == r["latency_ms"]["mean"] and len(r["repeats"]["mean_ms"]) == 2
               for r in rows)
