"""Units under the pipeline: export checks, Clip folding, data splits, the latency harness."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from edgekd.measure.latency import LatencyStats, measure_latency, peak_rss_mb, reset_peak_rss, seeded_input
from edgekd.config.schema import DataSpec, LatencySpec
from edgekd.stages.export.config import ExportConfig
from edgekd.data import build_splits
from edgekd.errors import StageError
from edgekd.stages.export.onnx_folds import fold_constant_clips
from edgekd.stages.quantize.quantization import calibrate, quantize_model, QuantSpec
from edgekd.stages.export.int8_layouts import export_qdq
from edgekd.stages.export.stage import TorchSide, compare_with_torch


def predict_logits(model, x):
    with torch.no_grad():
        return model.eval()(x)
from edgekd.models.zoo import TinyCNN

CFG = ExportConfig(stage="export")


def _fp32_onnx(model, path):
    torch.onnx.export(model.eval(), (torch.rand(1, 1, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])


def test_fp32_export_parity_passes_for_the_same_model_and_fails_for_another(tmp_path):
    torch.manual_seed(0)
    model, other = TinyCNN(num_classes=4).eval(), TinyCNN(num_classes=4).eval()
    _fp32_onnx(model, tmp_path / "m.onnx")
    x = torch.rand(8, 1, 16, 16)
    parity = compare_with_torch(tmp_path / "m.onnx", TorchSide(predict_logits(model, x).numpy(), x), "fp32", CFG, "m")
    assert parity["max_abs_diff"] <= parity["tolerance"]
    with pytest.raises(StageError, match=r"export m: ONNX output differs from torch by .* > "):
        compare_with_torch(tmp_path / "m.onnx", TorchSide(predict_logits(other, x).numpy(), x), "fp32", CFG, "m")


def test_int8_export_matches_fake_quant_model_and_flags_a_wrong_one(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(32, 1, 16, 16)
    model = TinyCNN(num_classes=4)
    q = quantize_model(model, QuantSpec(unsigned_input=True))
    calibrate(q, x[:32].split(16))
    export_qdq(q, x[:1], tmp_path / "q.onnx", 17)
    parity = compare_with_torch(tmp_path / "q.onnx", TorchSide(predict_logits(q, x).numpy(), x), "int8", CFG, "q")
    assert parity["top1_agreement"] == 1.0 and (parity["sqnr_db"] is None or parity["sqnr_db"] > 30)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with torch.no_grad():
        model.classifier.weight.mul_(-1)  # same shapes, different predictions
    other = quantize_model(model, QuantSpec(unsigned_input=True))
    calibrate(other, x[:32].split(16))
    with pytest.raises(StageError, match="fake-quant model"):
        compare_with_torch(tmp_path / "q.onnx", TorchSide(predict_logits(other, x).numpy(), x), "int8", ExportConfig(stage="export", int8_min_top1_agreement=1.0), "q")


def test_reduce_range_weights_fit_seven_bits_and_no_clip_survives(tmp_path):
    q = quantize_model(TinyCNN(num_classes=4), QuantSpec(reduce_range=True))
    calibrate(q, torch.rand(16, 1, 16, 16)[:16].split(16))
    export_qdq(q, torch.rand(1, 1, 16, 16), tmp_path / "q.onnx", 17)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) >= 2]
    assert weights and all(w.min() >= -64 and w.max() <= 63 for w in weights)
    assert "Clip" not in {n.op_type for n in graph.node}


def test_fold_constant_clips_folds_only_constant_inputs():
    w = numpy_helper.from_array(np.array([-100, 0, 100], dtype=np.int8), "w")
    lo, hi = numpy_helper.from_array(np.int8(-64), "lo"), numpy_helper.from_array(np.int8(63), "hi")
    nodes = [helper.make_node("Clip", ["w", "lo", "hi"], ["wc"]), helper.make_node("Clip", ["x", "lo", "hi"], ["y"]),
             helper.make_node("Add", ["wc", "y"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, [3])],
                              [helper.make_tensor_value_info("z", TensorProto.INT8, [3])], [w, lo, hi])
    model = helper.make_model(graph)
    assert fold_constant_clips(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Clip", "Add"]
    folded = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert folded["wc"].tolist() == [-64, 0, 63] and "w" not in folded


def test_data_splits_are_fixed_by_seed_and_disjoint():
    a, b = build_splits(DataSpec()), build_splits(DataSpec())
    assert torch.equal(a.example(400, "test"), b.example(400, "test")) and a.input_shape == (1, 32, 32)
    assert a.num_classes == 10 and sum(a.size(s) for s in ("train", "val", "test")) == 1797
    ids = [set(a.set(s).raw_set.index.tolist()) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    c = build_splits(DataSpec(seed=1))
    assert not torch.equal(a.labels("test"), c.labels("test"))


def test_digits_repeat_the_gray_image_for_three_channel_models():
    gray, rgb = build_splits(DataSpec()), build_splits(DataSpec(channels=3))
    assert rgb.input_shape == (3, 32, 32)
    g, r = gray.example(50, "test"), rgb.example(50, "test")
    assert all(torch.equal(r[:, c], g[:, 0]) for c in range(3))


def test_latency_harness_counts_runs_and_orders_percentiles():
    calls = []
    stats = measure_latency(lambda: calls.append(sum(range(200))),
                            LatencySpec(warmup_runs=5, warmup_seconds=0.0, runs=50, min_seconds=0.0))
    assert stats.runs == 50 and stats.warmup_runs == 5 and len(calls) == 55
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max
    assert stats.cov == pytest.approx(stats.std / stats.mean)
    timed = measure_latency(lambda: None, LatencySpec(warmup_runs=1, warmup_seconds=0.05, runs=1, min_seconds=0.05))
    assert timed.warmup_runs > 1 and timed.runs > 1  # warm-up and timing also run by time


def test_latency_defaults_follow_the_issue_and_stats_are_exact_on_known_times():
    spec = LatencySpec()
    assert (spec.warmup_runs, spec.warmup_seconds, spec.runs, spec.min_seconds) == (10, 0.2, 200, 3.0)
    stats = LatencyStats.of(list(range(1, 101)), warmup_runs=7)  # 1..100 ms
    assert (stats.min, stats.max, stats.mean, stats.p50) == (1.0, 100.0, 50.5, 50.5)
    assert stats.p90 == pytest.approx(90.1) and stats.p95 == pytest.approx(95.05) and stats.p99 == pytest.approx(99.01)
    assert stats.std == pytest.approx(np.std(np.arange(1, 101), ddof=1)) and stats.cov == pytest.approx(stats.std / 50.5)
    assert stats.seconds == pytest.approx(5.05) and stats.runs == 100 and stats.warmup_runs == 7
    assert stats.fastest_tenth_mean == 5.5  # the mean of 1..10
    assert LatencyStats.of([3.0, 7.0]).fastest_tenth_mean == 3.0  # at least one call


@given(work=st.floats(0.5, 50.0), slice_ms=st.floats(1.0, 10.0), busy=st.floats(0.0, 0.8),
       seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_the_fastest_tenth_reads_the_work_through_a_co_tenant_that_only_adds_time(work, slice_ms, busy, seed):
    """A co-tenant only ever adds time to a call (whole scheduler slices, here on up to 80% of calls):
    the mean of the fastest tenth stays within the calls' own jitter of the work, wherever the p50 lands
    (benchmarks/gate_power.py compares it with the p50 and the mean as the gate's round statistic)."""
    rng = np.random.default_rng(seed)
    jitter = work * (1 + 0.01 * rng.random(400))
    added = slice_ms * rng.integers(1, 4, size=400) * (rng.random(400) < busy)
    stats = LatencyStats.of(jitter + added)
    assert work <= stats.fastest_tenth_mean <= work * 1.01
    if busy > 0.6:  # while the p50 has moved by whole slices (most calls were interrupted)
        assert stats.p50 > work * 1.01


def test_peak_rss_is_reset_per_session_and_sees_an_allocation():
    import mmap

    assert reset_peak_rss()  # Linux: /proc/self/clear_refs takes "5"
    before = peak_rss_mb()
    block = mmap.mmap(-1, 64 << 20)  # anonymous: unmapped (not kept by malloc) when closed
    page = b"x" * (1 << 20)
    for _ in range(64):
        block.write(page)  # touched, so resident
    grown = peak_rss_mb()
    block.close()
    assert grown - before > 50
    reset_peak_rss()
    assert peak_rss_mb() < grown - 50  # the mark fell back to what is resident now


def test_seeded_input_is_deterministic_and_not_zero():
    a, b = seeded_input((1, 3, 8, 8)), seeded_input((1, 3, 8, 8))
    assert np.array_equal(a, b) and a.dtype == np.float32 and np.count_nonzero(a) == a.size


def test_int8_artifact_rebuilds_bit_exact(tmp_path):
    """--resume and export rebuild the fake-quant model from safetensors, never from a pickle."""
    from edgekd.artifacts.artifact import Artifact, save_torch
    from edgekd.stages.quantize.quantization import rebuild_int8

    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16)
    parent = TinyCNN(num_classes=4).eval()
    q = quantize_model(parent, QuantSpec(unsigned_input=True, reduce_range=True))
    calibrate(q, x[:16].split(16))
    q.train()
    F.cross_entropy(q(x), torch.zeros(16, dtype=torch.long)).backward()
    with torch.no_grad():
        for p in q.parameters():
            p -= 0.01 * p.grad  # move weights and learned scales away from their initial values
    q.eval()
    art = save_torch(q, tmp_path / "q", Artifact("s-int8", "torch-int8", "int8", "", "quantize", "s-fp32", "h", {
        "arch": "edgekd:tiny_cnn", "arch_kwargs": {"num_classes": 4}, "metrics": {},
        "quantization": {"unsigned_input": True, "reduce_range": True}}))
    rebuilt = rebuild_int8(Artifact.from_json(art.to_json()), parent)
    assert torch.equal(rebuilt(x), q(x))


def test_ort_warns_about_full_range_weights_exactly_on_cpus_without_vnni(tmp_path):
    from edgekd.backends.onnxruntime import cpu_has_vnni, saturation_risk

    x = torch.rand(16, 1, 16, 16)
    paths = {}
    for reduce in (False, True):
        q = quantize_model(TinyCNN(num_classes=4), QuantSpec(unsigned_input=True, reduce_range=reduce))
        calibrate(q, x[:16].split(16))
        paths[reduce] = tmp_path / f"q{int(reduce)}.onnx"
        export_qdq(q, x[:1], paths[reduce], 17)
    assert saturation_risk(paths[True]) is None  # 7-bit weights cannot saturate
    warning = saturation_risk(paths[False])
    if cpu_has_vnni() is False:
        assert warning and "reduce_range: true" in warning
    else:
        assert warning is None


@settings(max_examples=200, deadline=None)
@given(message=st.text(), kind=st.sampled_from([ValueError, RuntimeError, KeyError, OSError, AssertionError]))
def test_first_line_is_one_nonblank_line_of_any_message(message, kind):
    """What one-line errors quote of a library's exception: never empty, never two lines, never an
    IndexError (``str(exc).splitlines()[0]`` raised one on an empty message, an internal error exit 3)."""
    from edgekd.errors import first_line

    exc = kind(message)
    line, typed = first_line(exc), first_line(exc, with_type=True)
    for text in (line, typed):
        assert text.strip() and len(text.splitlines()) == 1
    assert typed.startswith(kind.__name__)
    assert line in str(exc) if str(exc).strip() else line == kind.__name__
