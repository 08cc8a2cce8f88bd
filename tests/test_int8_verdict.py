"""An INT8 row is ``ok`` only when its runtime runs it in INT8 and it is faster than its FP32 file."""

from __future__ import annotations

import time

import pytest

from edgekd.measure.int8_verdict import fp32_counterpart, interleaved_ratio, judge


def int8_row(int8: int, total: int, **layers) -> dict:
    return {"variant": "student-int8", "backend": "onnxruntime", "precision": "int8", "status": "ok", "error": None,
            "warnings": [], "int8_layers": {"int8": int8, "total": total, **layers}}


def test_a_row_running_mostly_in_float_is_failed_with_its_float_layers_and_their_causes():
    row = judge(int8_row(20, 54, float_layers={"/features.0.0/Conv": "its output goes to HardSwish with no "
                                                                       "QuantizeLinear right after it"}), None, None)
    assert row["status"] == "failed"
    assert "runs mostly in float on onnxruntime: 20/54" in row["error"]
    assert "/features.0.0/Conv: its output goes to HardSwish" in row["error"]


def test_a_few_float_layers_are_a_warning_and_all_int8_is_ok():
    partly = judge(int8_row(50, 54, float_layers={"fc": "left in float by ORT's fusions"}), None, None)
    assert partly["status"] == "ok" and partly["warnings"] == ["4 of 54 conv/matmul layers run in float (fc: left in "
                                                               "float by ORT's fusions)"]
    assert judge(int8_row(54, 54), None, None) == {**int8_row(54, 54)}


@pytest.mark.parametrize("ratio, low, high, status, warned", [
    (0.6, 0.55, 0.65, "ok", False), (0.99, 0.95, 0.999, "ok", False),
    (1.04, 0.97, 1.10, "ok", True),    # the interval straddles the limit: not shown slower, not shown faster
    (1.4, 1.30, 1.50, "failed", False)])
def test_an_int8_row_is_failed_only_when_its_interleaved_ratio_is_surely_above_the_limit(ratio, low, high, status,
                                                                                           warned):
    versus = {"ratio": ratio, "ratio_low": low, "ratio_high": high, "p50_ms": ratio * 2.0, "fp32_p50_ms": 2.0,
              "pairs": 100}
    row = judge(int8_row(54, 54), versus, 1.0)
    assert row["status"] == status and row["int8_vs_fp32"] == versus
    if status == "failed":
        assert "slower than its FP32 file" in row["error"]
        assert "(ratio 1.40, 95% interval 1.30-1.50 > latency.int8_max_ratio 1.0)" in row["error"]
    assert any("INT8 not shown faster" in w and "interval 0.97-1.10" in w for w in row["warnings"]) == warned
    assert judge(int8_row(54, 54), versus, None)["status"] == "ok"  # null: not checked


def test_fp32_rows_and_failed_rows_are_left_as_they_are():
    fp32 = {**int8_row(0, 54), "precision": "fp32"}
    assert judge(fp32, None, 1.0) == fp32
    failed = {**int8_row(0, 54), "status": "failed", "error": "onnxruntime could not load it"}
    assert judge(failed, None, 1.0) == failed


def test_the_fp32_counterpart_is_the_same_role_else_the_teacher():
    names = ["teacher-fp32", "student-fp32", "student-int8", "teacher-int8"]
    assert fp32_counterpart("student-int8", names) == "student-fp32"
    assert fp32_counterpart("teacher-int8", names) == "teacher-fp32"
    assert fp32_counterpart("pruned-int8", ["teacher-fp32", "pruned-int8"]) == "teacher-fp32"
    assert fp32_counterpart("student-int8", ["student-int8"]) is None


def test_interleaved_timing_tells_a_slower_call_from_a_faster_one():
    result = interleaved_ratio(lambda: time.sleep(0.004), lambda: time.sleep(0.001), runs=15)
    assert result["ratio"] > 1.5 and result["pairs"] == 15
    assert 1.5 < result["ratio_low"] <= result["ratio"] <= result["ratio_high"]
    assert result["p50_ms"] > result["fp32_p50_ms"]


def test_interleaved_timing_does_not_keep_the_first_call_after_the_other_file_ran():
    """The call right after the other session ran pays for that session's still-spinning threads; here it
    sleeps 20 ms where every other call sleeps 1 ms. Single alternating calls would time only such calls."""
    last = {"who": None}

    def call(who: str):
        def run():
            time.sleep(0.02 if last["who"] not in (None, who) else 0.001)
            last["who"] = who
        return run

    result = interleaved_ratio(call("int8"), call("fp32"), runs=12)
    assert result["p50_ms"] < 10 and result["fp32_p50_ms"] < 10 and result["pairs"] == 12


def test_near_tied_samples_do_not_decide_the_export_agreement():
    import numpy as np

    from edgekd.tasks.classification import decisive_agreement

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(100, 10)).astype(np.float32)
    output = reference + rng.normal(scale=1e-3, size=reference.shape).astype(np.float32)
    reference[:10, :2] = [5.0, 5.0 + 1e-6]  # ten exact near-ties ...
    output[:10, :2] = [5.0 + 1e-6, 5.0]     # ... each flipped by noise far below the outputs' difference
    result = decisive_agreement(reference, output)
    assert result["decisive_samples"] <= 90 and result["top1_agreement_decisive"] == 1.0
    assert float(np.mean(output.argmax(1) == reference.argmax(1))) <= 0.9  # what plain agreement says
    wrong = output.copy()
    wrong[50:60] = wrong[50:60, ::-1] * 3  # clearly different answers on decisive samples still count
    assert decisive_agreement(reference, wrong)["top1_agreement_decisive"] < 0.95


def test_the_int8_file_is_timed_against_fp32_with_both_sessions_not_spinning(tmp_path):
    """Two ONNX Runtime sessions taking turns on one machine: with spinning worker threads each pool spins
    into the other's calls (mnasnet0_5: 0.53-0.96 in turns, 0.93 alone), so the ratio is timed on sessions
    made without spinning, whatever the target says; the target itself is left as it was."""
    import torch

    from edgekd.backends import make_target
    from edgekd.measure.measurement import BackendPool
    from edgekd.measure.targets import versus_fp32
    from tests.int8_files import int8_files
    from tests.models import ResidualCNN

    model = ResidualCNN(num_classes=4, in_channels=3).eval()
    x = torch.rand(8, 3, 16, 16)
    _, int8 = int8_files(model, x, tmp_path / "q.onnx")
    fp32 = tmp_path / "f.onnx"
    torch.onnx.export(model, x[:1], str(fp32), input_names=["input"], dynamo=False, opset_version=17)
    pool = BackendPool()
    backend = pool.get("onnxruntime")
    seen = []
    compile_file = backend.compile

    def recording(path, target, shape=None):  # the real compile; only the settings it got are kept
        compiled = compile_file(path, target, shape)
        seen.append(compiled.settings()["allow_spinning"])  # read back from the ORT session
        return compiled

    backend.compile = recording
    target = make_target(name="cpu", backend="onnxruntime", threads=1, spinning=True)
    rows = {"m-int8": {"status": "ok", "precision": "int8", "warnings": []},
            "m-fp32": {"status": "ok", "precision": "fp32", "warnings": []}}
    timed = versus_fp32("m-int8", rows, {"m-int8": int8, "m-fp32": fp32}, target, pool)
    assert timed is not None and timed["ratio"] > 0 and not rows["m-int8"]["warnings"]
    assert seen == [False, False] and target.spinning


def test_the_interval_of_a_paired_ratio_holds_what_both_files_share():
    """A slow episode that hits both files at once (interleaved) moves the two alike: the ratio's interval
    stays tight around the true ratio, while the calls themselves scatter over 10x."""
    import numpy as np

    from edgekd.measure.int8_verdict import paired_ratio_interval

    rng = np.random.default_rng(1)
    load = np.repeat(rng.choice([1.0, 10.0], size=20), 10)  # runs of slow calls, shared by both files
    fp32 = 2.0 * load * rng.uniform(0.98, 1.02, size=200)
    int8 = 1.6 * load * rng.uniform(0.98, 1.02, size=200)
    low, high = paired_ratio_interval(int8, fp32)
    assert 0.75 < low <= 0.8 <= high < 0.85


def test_a_failed_row_shows_no_speed_up():
    from edgekd.report.build import table_rows

    def row(variant, p50, status):
        return {"variant": variant, "target": "t", "precision": "fp32", "status": status, "error": "slow",
                "accuracy": 0.5, "latency_ms": {"p50": p50, "p90": p50, "spread": 0.0}}

    report = {"variants": [{"name": "teacher-fp32", "size_bytes": 10}, {"name": "student-int8", "size_bytes": 5}],
              "results": [row("teacher-fp32", 2.0, "ok"), row("student-int8", 1.0, "failed")]}
    speedups = {r["variant"]: r["speed-up"] for r in table_rows(report, "t")}
    assert speedups == {"teacher-fp32": "1.00x", "student-int8": "-"}
