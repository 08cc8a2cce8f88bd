"""Gate: budgets -> verdicts -> exit codes 0/1/2 and a JUnit file with one testcase per budget line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edgekd.config.schema import Budget
from edgekd.errors import BudgetError
from edgekd.report.gate import evaluate_budget, exit_code

from .conftest import invoke, write_yaml


def _report(int8_acc_ov=0.95, ov_status="ok"):
    def row(variant, target, acc, p90, status="ok"):
        return {"variant": variant, "target": target, "backend": "x", "device": "CPU", "precision": "fp32",
                "status": status, "accuracy": acc if status == "ok" else None, "error": None if status == "ok" else "boom",
                "latency_ms": {"p50": p90 * 0.9, "p90": p90, "p99": p90 * 1.2, "mean": p90} if status == "ok" else None,
                "throughput_ips": 1.0}
    return {"schema": "edgekd.report/1", "variants": [
        {"name": "teacher-fp32", "onnx": "t", "size_bytes": 4 << 20, "params": 1, "macs": 1, "accuracy": 0.96},
        {"name": "student-int8", "onnx": "s", "size_bytes": 300 << 10, "params": 1, "macs": 1, "accuracy": 0.95}],
        "results": [row("teacher-fp32", "ort", 0.96, 1.0), row("student-int8", "ort", 0.955, 0.3),
                    row("teacher-fp32", "ov", 0.96, 1.0), row("student-int8", "ov", int8_acc_ov, 0.2, ov_status)]}


def test_all_budgets_met():
    verdicts = evaluate_budget(_report(), Budget(max_size_mb=0.5, max_accuracy_drop=0.02, min_accuracy=0.9,
                                                 max_latency_ms={"ov": {"p90": 0.25}, "ort": {"p50": 0.5}}))
    assert [v.name for v in verdicts] == ["max_size_mb", "min_accuracy", "max_accuracy_drop",
                                          "max_latency_ms.ov.p90", "max_latency_ms.ort.p50"]
    assert all(v.passed for v in verdicts) and exit_code(verdicts) == 0


@pytest.mark.parametrize("budget, failing", [
    (Budget(max_size_mb=0.25), "max_size_mb"),
    (Budget(max_accuracy_drop=0.005), "max_accuracy_drop"),
    (Budget(min_accuracy=0.96), "min_accuracy"),
    (Budget(max_latency_ms={"ov": {"p90": 0.1}}), "max_latency_ms.ov.p90"),
])
def test_each_budget_line_can_fail(budget, failing):
    verdicts = evaluate_budget(_report(), budget)
    assert [v.name for v in verdicts if not v.passed] == [failing]
    assert exit_code(verdicts) == 1


def test_accuracy_drop_is_per_backend():
    verdicts = evaluate_budget(_report(int8_acc_ov=0.90), Budget(max_accuracy_drop=0.02))
    assert not verdicts[0].passed and "ov [ok]: drop vs teacher-fp32 +0.0600" in verdicts[0].message
    assert "ort [ok]: drop vs teacher-fp32 +0.0050" in verdicts[0].message


def test_failed_target_violates_its_lines():
    verdicts = evaluate_budget(_report(ov_status="failed"), Budget(max_latency_ms={"ov": {"p90": 1.0}}))
    assert not verdicts[0].passed and "failed" in verdicts[0].message


def test_unknown_variant_or_target_is_bad_input():
    with pytest.raises(BudgetError, match="'student-int4' is not in the report; valid: teacher-fp32, student-int8"):
        evaluate_budget(_report(), Budget(variant="student-int4", max_size_mb=1.0))
    with pytest.raises(BudgetError, match="max_latency_ms.tpu.*valid: ort, ov"):
        evaluate_budget(_report(), Budget(max_latency_ms={"tpu": {"p50": 1.0}}))


def _on_machine(report, machines: dict[str, str]):
    for r in report["results"]:
        r["fingerprint"] = {"machine_id": machines[r["target"]], "host": "h", "cpu": {"model": f"cpu-{machines[r['target']]}"}}
    return report


def test_gate_refuses_latencies_measured_on_different_machines():
    mixed = _on_machine(_report(), {"ort": "aaaa", "ov": "bbbb"})
    with pytest.raises(BudgetError, match="measured on different machines") as err:
        evaluate_budget(mixed, Budget(max_latency_ms={"ov": {"p90": 1.0}, "ort": {"p90": 1.0}}))
    assert "aaaa (cpu-aaaa, h)" in str(err.value) and "bbbb (cpu-bbbb, h)" in str(err.value)
    assert evaluate_budget(mixed, Budget(max_size_mb=1.0))[0].passed  # no latency line: nothing to compare
    same = _on_machine(_report(), {"ort": "aaaa", "ov": "aaaa"})
    assert evaluate_budget(same, Budget(max_latency_ms={"ov": {"p90": 1.0}}, machine_id="aaaa"))[0].passed
    with pytest.raises(BudgetError, match="'machine_id': the limits were set on machine cccc, .* measured on aaaa"):
        evaluate_budget(same, Budget(max_latency_ms={"ov": {"p90": 1.0}}, machine_id="cccc"))


@pytest.mark.floor
def test_gate_cli_exit_codes_and_junit(tiny_run, tmp_path):
    report = json.loads((tiny_run / "report.json").read_text())
    size_mb = next(v["size_bytes"] for v in report["variants"] if v["name"] == "student-int8") / (1 << 20)
    ok = write_yaml(tmp_path / "ok.yaml", {"variant": "student-int8", "max_size_mb": size_mb * 2,
                                           "max_latency_ms": {"tiny-ort": {"p90": 1000.0}, "tiny-ov": {"p50": 1000.0}}})
    junit = tmp_path / "gate.xml"
    result = invoke("gate", tiny_run, "--budget", ok, "--junit", junit)
    assert result.exit_code == 0, result.output
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == ["max_size_mb", "max_latency_ms.tiny-ort.p90", "max_latency_ms.tiny-ov.p50"]
    assert not ET.parse(junit).getroot().findall(".//failure")

    bad = write_yaml(tmp_path / "bad.yaml", {"variant": "student-int8", "max_size_mb": size_mb / 2})
    result = invoke("gate", tiny_run, "--budget", bad, "--junit", junit)
    assert result.exit_code == 1 and "FAIL max_size_mb" in result.output
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1" and root.find(".//failure").get("type") == "BudgetViolated"

    assert invoke("gate", tiny_run, "--budget", tmp_path / "nope.yaml").exit_code == 2
    assert invoke("gate", tmp_path, "--budget", ok).exit_code == 2  # no report.json there
    wrong = write_yaml(tmp_path / "wrong.yaml", {"variant": "student-int4"})
    assert invoke("gate", tiny_run, "--budget", wrong).exit_code == 2


def test_compress_with_budget_exits_1_when_violated(tiny_teacher, tiny_files, tmp_path):
    budget = write_yaml(tmp_path / "b.yaml", {"variant": "student-int8", "max_size_mb": 0.000001})
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", tmp_path / "run",
                    "--target", tiny_files["ort"], "--budget", budget)
    assert result.exit_code == 1 and "FAIL max_size_mb" in result.output
    assert (tmp_path / "run" / "report.json").is_file()


def test_relative_budgets_compare_with_the_teacher_measured_in_the_same_run():
    """max_latency_ratio / max_size_ratio: both sides from one run, so they survive a change of runner."""
    report = _report()  # student-int8: p50 0.27 vs teacher 0.9 on ort (0.30x), 0.18 vs 0.9 on ov (0.20x)
    met = evaluate_budget(report, Budget(max_latency_ratio={"ort": 0.33, "ov": 0.25}, max_size_ratio=0.1))
    assert [v.name for v in met] == ["max_size_ratio", "max_latency_ratio.ort", "max_latency_ratio.ov"]
    assert all(v.passed for v in met), met
    assert "0.300x teacher-fp32's 0.900 ms in the same run" in met[1].message
    missed = evaluate_budget(report, Budget(max_latency_ratio={"ort": 0.25}, max_size_ratio=0.05))
    assert [v.name for v in missed if not v.passed] == ["max_size_ratio", "max_latency_ratio.ort"]
    failed_row = evaluate_budget(_report(ov_status="failed"), Budget(max_latency_ratio={"ov": 10.0}))
    assert not failed_row[0].passed and "failed" in failed_row[0].message
    with pytest.raises(BudgetError, match="max_latency_ratio.gpu': no such target"):
        evaluate_budget(report, Budget(max_latency_ratio={"gpu": 0.5}))


def test_one_budget_file_holds_several_variants():
    budget = Budget(variant="student-int8", max_size_mb=0.5,
                    variants=[Budget(variant="teacher-fp32", max_size_mb=1.0), Budget(variant="teacher-fp32",
                                                                                     min_accuracy=0.9)])
    verdicts = evaluate_budget(_report(), budget)
    assert [v.name for v in verdicts] == ["max_size_mb", "teacher-fp32:max_size_mb", "teacher-fp32:min_accuracy"]
    assert [v.passed for v in verdicts] == [True, False, True]
    assert exit_code(verdicts) == 1


def test_under_github_actions_gate_appends_its_table_to_the_step_summary(tiny_run, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    budget = write_yaml(tmp_path / "b.yaml", {"max_size_mb": 1e-6, "max_latency_ratio": {"tiny-ort": 100.0}})
    result = invoke("gate", tiny_run, "--budget", budget)
    assert result.exit_code == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "### edgekd gate: 1/2 budget lines met" in text
    assert "| ❌ | `max_size_mb` |" in text and "| ✅ | `max_latency_ratio.tiny-ort` |" in text
    monkeypatch.delenv("GITHUB_ACTIONS")
    invoke("gate", tiny_run, "--budget", budget)
    assert summary.read_text() == text  # outside Actions nothing is written
