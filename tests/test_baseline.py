"""Baselines (issue 15.1): saved only by 'edgekd baseline save', judged by 'gate --baseline'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.report.baseline import Tolerances, compare_with_baseline, median_ratio_interval

from .conftest import FAST_LATENCY, TINY_DATA, invoke, reseal, write_yaml


def test_the_interval_catches_a_ten_percent_slowdown_and_not_the_noise():
    rng = np.random.default_rng(0)
    base = 1.0 + 0.03 * rng.standard_normal(1000)
    same = 1.0 + 0.03 * rng.standard_normal(1000)
    slower = 1.1 + 0.03 * rng.standard_normal(1000)
    ratio, lo, hi = median_ratio_interval(same, base)
    assert lo <= 1.0 <= hi and abs(ratio - 1) < 0.01
    ratio, lo, hi = median_ratio_interval(slower, base)
    assert 1.08 < ratio < 1.12 and lo > 1.05


def test_a_baseline_round_trip_passes_and_a_slower_run_fails_with_its_ratio_and_interval(tiny_run, tmp_path):
    saved = invoke("baseline", "save", tiny_run, "--out", tmp_path / "base.json")
    assert saved.exit_code == 0, saved.output
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["schema"] == "edgekd.baseline/1" and all(len(r["latency_samples_ms"]) >= 20 for r in base["rows"])
    same = invoke("gate", tiny_run, "--baseline", tmp_path / "base.json")
    assert same.exit_code == 0, same.output
    assert "within noise" in same.output and "baseline.size.student-int8" in same.output

    slow = tmp_path / "slow"  # the same run, its student-int8 timings 40% slower on every target
    shutil.copytree(tiny_run, slow)
    for path in (slow / "measurements").glob("student-int8@*.json"):
        row = json.loads(path.read_text())
        row["latency_samples_ms"] = [t * 1.4 for t in row["latency_samples_ms"]]
        path.write_text(json.dumps(row))
    assert invoke("report", slow).exit_code == 2  # changed after the run completed: refused
    reseal(slow)  # stands in for a run that measured these timings
    assert invoke("report", slow).exit_code == 0
    failed = invoke("gate", slow, "--baseline", tmp_path / "base.json")
    assert failed.exit_code == 1
    line = next(x for x in failed.output.splitlines() if x.startswith("FAIL baseline.student-int8@"))
    assert "ratio 1.400 (95% interval" in line and "SLOWER" in line


def test_a_baseline_from_another_machine_is_judged_by_ratios_to_the_teacher(tiny_run, tmp_path):
    invoke("baseline", "save", tiny_run, "--out", tmp_path / "base.json")
    base = json.loads((tmp_path / "base.json").read_text())
    for row in base["rows"]:
        row["machine_id"] = "elsewhere"
    (tmp_path / "base.json").write_text(json.dumps(base))
    result = invoke("gate", tiny_run, "--baseline", tmp_path / "base.json")
    assert result.exit_code == 0 and "judged by ratios (baseline from machine elsewhere" in result.output


def test_gate_needs_a_budget_or_a_baseline_and_never_writes_one(tiny_run, tmp_path):
    result = invoke("gate", tiny_run)
    assert result.exit_code == 2 and "--budget FILE, --baseline FILE, or both" in result.output
    assert not (tiny_run / "baseline.json").exists()


def test_size_growth_and_accuracy_drop_against_the_baseline():
    report = {"variants": [{"name": "s", "size_bytes": 1100}],
              "results": [{"variant": "s", "target": "t", "status": "ok", "accuracy": 0.90,
                           "latency_ms": {"p50": 1.0}, "latency_samples_ms": [1.0] * 50, "fingerprint": {"machine_id": "m"}}]}
    base = {"rows": [{"variant": "s", "target": "t", "size_bytes": 1000, "accuracy": 0.95, "machine_id": "m",
                      "latency_ms": {"p50": 1.0}, "latency_samples_ms": [1.0] * 50}]}
    verdicts = {v.name: v for v in compare_with_baseline(report, base, Tolerances())}
    assert not verdicts["baseline.size.s"].passed and "+10.0%" in verdicts["baseline.size.s"].message
    assert not verdicts["baseline.s@t.accuracy"].passed and verdicts["baseline.s@t.latency"].passed
    loose = {v.name: v.passed for v in compare_with_baseline(report, base, Tolerances(0.05, 0.1, 0.2))}
    assert all(loose.values())



def _measured_run(teacher, tmp_path, name: str, student_width: float, target: Path) -> Path:
    """A real compress run on 64x64 inputs whose student is TinyCNN at ``student_width``."""
    # teacher_check off: the teacher learned 16x16 images; these runs time 64x64 ones, its accuracy is moot
    recipe = {"name": name, "arch": "edgekd:tiny_cnn", "data": {**TINY_DATA, "image_size": 64}, "teacher_check": False,
              "student": {"arch": "edgekd:tiny_cnn", "arch_args": {"width": student_width}},
              "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                         {"stage": "quantize", "mode": "ptq", "calibration_batches": 2}, {"stage": "export"}],
              "targets": [str(target)]}
    out = tmp_path / name
    result = invoke("compress", teacher, "--recipe", write_yaml(tmp_path / f"{name}.yaml", recipe), "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_a_second_run_of_the_same_files_passes_and_a_wider_student_fails_with_ratio_and_interval(tiny_teacher,
                                                                                                 tmp_path):
    """Issue 15's Done-when, measured for real: repeats put the drift between runs into the interval."""
    target = write_yaml(tmp_path / "ort.yaml", {"name": "ort-repeats", "backend": "onnxruntime", "threads": 1,
                                                "latency": {**FAST_LATENCY, "runs": 50, "repeats": 5}})
    first = _measured_run(tiny_teacher, tmp_path, "first", 0.5, target)
    assert invoke("baseline", "save", first, "--out", tmp_path / "base.json").exit_code == 0
    saved = json.loads((tmp_path / "base.json").read_text())["rows"]
    assert all(len(r["repeats_p50_ms"]) == 5 and len(r["repeats_mean_ms"]) == 5 for r in saved)

    again = tmp_path / "again"  # the same files measured again: resume re-times every variant
    shutil.copytree(first, again)
    resumed = invoke("compress", tiny_teacher, "--recipe", tmp_path / "first.yaml", "--out", again, "--resume")
    assert resumed.exit_code == 0, resumed.output
    # --min-effect 3: inside a test suite on 2 loaded cores the same file re-measured a minute later read
    # up to 1.20x (interval 1.02-1.41 from 5 repeats a side), and failed at 0.5 once beside another job
    # (issue 22); the 5-10% regime is what benchmarks/gate_power.py measures, on a machine left alone.
    # Here: same files pass, 64x the work (read 24x) fails, whatever else the machine is doing.
    same = invoke("gate", again, "--baseline", tmp_path / "base.json", "--min-effect", "3")
    assert same.exit_code == 0, same.output
    assert "from 5 and 5 repeats" in same.output  # the teacher's own row: by its repeats
    assert "judged against the unchanged teacher-fp32" in same.output  # the students: relative to it

    wider = _measured_run(tiny_teacher, tmp_path, "wider", 4.0, target)  # 64x the student's conv work
    failed = invoke("gate", wider, "--baseline", tmp_path / "base.json", "--min-effect", "3")
    assert failed.exit_code == 1, failed.output
    line = next(x for x in failed.output.splitlines() if x.startswith("FAIL baseline.student-fp32@ort-repeats.latency"))
    # the teacher file is the same bytes in both runs: the student is judged relative to it, round by round
    assert "judged against the unchanged teacher-fp32" in line and "from 5 and 5 rounds" in line and "SLOWER" in line
    assert "FAIL baseline.size.student-fp32" in failed.output  # and it grew
    assert "PASS baseline.teacher-fp32@ort-repeats.latency" in failed.output


def rounds_report(teacher: list[float], student: list[float], sha: str = "t" * 64,
                  means: tuple[list[float], list[float]] | None = None) -> dict:
    """A report whose teacher and student were timed in the same rounds (p50s, and each round's mean
    call where ``means`` gives them: teacher's, student's)."""
    def row(variant, p50s, file, round_means):
        repeats = {"p50_ms": p50s} if round_means is None else {"p50_ms": p50s, "mean_ms": round_means}
        return {"variant": variant, "target": "cpu", "status": "ok", "accuracy": 0.9,
                "latency_ms": {"p50": p50s[0]}, "latency_samples_ms": [p50s[0]] * 30,
                "repeats": repeats, "fingerprint": {"machine_id": "m", "artifact_sha256": file}}
    teacher_means, student_means = means or (None, None)
    return {"variants": [{"name": "teacher-fp32", "size_bytes": 100}, {"name": "student-int8", "size_bytes": 10}],
            "results": [row("teacher-fp32", teacher, sha, teacher_means),
                        row("student-int8", student, "s" * 64, student_means)]}


def test_a_student_is_judged_against_the_unchanged_teacher_timed_in_the_same_rounds():
    """Issue 26: on a loaded runner the unchanged teacher read 22% faster in a second run, so a student's
    own p50 failed or passed on drift alone. With the teacher's file the same bytes in both runs, the
    student's time relative to the teacher in each round is what is compared."""
    from edgekd.report.baseline import baseline_of

    rng = np.random.default_rng(0)
    noise = lambda: list(1 + 0.01 * rng.standard_normal(5))  # noqa: E731
    teacher_then = [10 * n for n in noise()]
    student_then = [t / 4 * n for t, n in zip(teacher_then, noise())]
    base = baseline_of(rounds_report(teacher_then, student_then))
    # the machine is 22% faster in the second run: teacher and student alike
    teacher_now = [t * 0.78 * n for t, n in zip(teacher_then, noise())]
    drifted = rounds_report(teacher_now, [t / 4 * n for t, n in zip(teacher_now, noise())])
    (verdict,) = [v for v in compare_with_baseline(drifted, base) if v.name.endswith("student-int8@cpu.latency")]
    assert verdict.passed and "judged against the unchanged teacher-fp32" in verdict.message
    slowed = rounds_report(teacher_now, [t / 4 * 1.10 * n for t, n in zip(teacher_now, noise())])  # truly 10% slower
    (verdict,) = [v for v in compare_with_baseline(slowed, base) if v.name.endswith("student-int8@cpu.latency")]
    assert not verdict.passed and "SLOWER" in verdict.message
    # another teacher file: the rule does not apply, the student's own repeats judge (and read the drift as a change)
    other = rounds_report(teacher_now, [t / 4 * n for t, n in zip(teacher_now, noise())], sha="u" * 64)
    (verdict,) = [v for v in compare_with_baseline(other, base) if v.name.endswith("student-int8@cpu.latency")]
    assert "judged against the unchanged" not in verdict.message and "from 5 and 5 repeats" in verdict.message



def test_the_teacher_rule_compares_each_rounds_mean_call_where_both_runs_recorded_one():
    """Issue 26: beside a CPU-bound job a call's time falls in modes one scheduler slice apart; a round's
    p50 sits on one mode and barely moves when the work grows (a file 12.8% slower alone read ~4.5% by
    p50), while the mean moves with the share of calls in each mode. Here the p50s are identical in both
    runs and only the means show the slowdown: the rule must read the means, and fall back to the p50s
    for a baseline saved before means were recorded."""
    from edgekd.report.baseline import baseline_of

    rng = np.random.default_rng(1)
    noise = lambda: [1 + 0.01 * x for x in rng.standard_normal(5)]  # noqa: E731
    teacher_p50, student_p50 = [14.0] * 5, [10.0] * 5
    teacher_then = [15 * n for n in noise()]
    base = baseline_of(rounds_report(teacher_p50, student_p50, means=(teacher_then, [11 * n for n in noise()])))
    teacher_now = [15 * n for n in noise()]
    slowed = rounds_report(teacher_p50, student_p50, means=(teacher_now, [11 * 1.10 * n for n in noise()]))
    (verdict,) = [v for v in compare_with_baseline(slowed, base) if v.name.endswith("student-int8@cpu.latency")]
    assert not verdict.passed and "SLOWER" in verdict.message and "each round's mean call" in verdict.message
    unchanged = rounds_report(teacher_p50, student_p50, means=(teacher_now, [11 * n for n in noise()]))
    (verdict,) = [v for v in compare_with_baseline(unchanged, base) if v.name.endswith("student-int8@cpu.latency")]
    assert verdict.passed and "each round's mean call" in verdict.message

    old = {**base, "rows": [{k: v for k, v in row.items() if k != "repeats_mean_ms"} for row in base["rows"]]}
    (verdict,) = [v for v in compare_with_baseline(slowed, old) if v.name.endswith("student-int8@cpu.latency")]
    assert verdict.passed and "each round's p50 call" in verdict.message  # the p50s did not move


@given(outlier=st.floats(0.5, 2.0), where=st.integers(0, 7), seed=st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_one_outlier_round_cannot_hide_a_slowdown_or_fake_one(outlier, where, seed):
    """Issue 26: a stall or a co-tenant's burst can hit one round of a run. With 8 rounds a side at 1%
    round-to-round noise, a true 10% slowdown must be flagged and an unchanged file must not be, whatever
    one round of the new run reads (the rank interval; a Welch interval let half of them through)."""
    from edgekd.report.baseline import rounds_shift_interval

    rng = np.random.default_rng(seed)
    then = list(1 + 0.01 * rng.standard_normal(8))
    for truth in (1.0, 1.10):
        now = [truth * (1 + 0.01 * z) for z in rng.standard_normal(8)]
        now[where] *= outlier
        change, lo, hi, method = rounds_shift_interval(now, then)
        assert method == "Hodges-Lehmann"
        flagged = change > 1.05 and lo > 1.0
        assert flagged == (truth > 1.0), (truth, change, lo, hi)


def test_fewer_than_four_rounds_a_side_use_the_welch_interval():
    from edgekd.report.baseline import repeats_ratio_interval, rounds_shift_interval

    now, then = [1.1, 1.12, 1.09], [1.0, 1.01, 0.99]
    assert rounds_shift_interval(now, then) == (*repeats_ratio_interval(now, then), "Welch t")
