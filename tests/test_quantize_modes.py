"""Quantize stage modes (issue 4 so far): calibration methods, W4A8, per-layer overrides."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekd.artifacts.artifact import Artifact, stage_artifacts
from edgekd.stages.channels import rebuild_float
from edgekd.stages.quantize.quantization import QuantSpec, rebuild_int8
from edgekd.errors import StageError
from edgekd.stages.quantize.quantization import _act_quants, quantize_model
from edgekd.models.zoo import TinyCNN
from edgekd.train.loop import LoopSettings
from edgekd.config.schema import TrainSpec

from .conftest import TINY_DATA, invoke, save_model, write_yaml


def calibrated_range(method: str, x: torch.Tensor, percentile: float = 99.999) -> tuple[float, float]:
    """(largest representable value, quantization MSE) of an unsigned activation calibrated on ``x``."""
    import brevitas.nn as qnn
    from brevitas.graph.calibrate import calibration_mode

    _, unsigned = _act_quants(method, percentile)
    q = qnn.QuantIdentity(act_quant=unsigned, return_quant_tensor=True).eval()
    with torch.no_grad():
        with calibration_mode(q):
            q(x)
        return float(q.act_quant.scale()) * 255, float((q(x).value - x).pow(2).mean())


def test_calibration_methods_choose_different_ranges_on_heavy_tailed_data():
    torch.manual_seed(0)
    x = torch.randn(32, 1000).mul(1.5).exp()  # log-normal: a long tail of rare large values
    top = float(x.max())
    minmax, minmax_err = calibrated_range("minmax", x)
    p99, _ = calibrated_range("percentile", x, percentile=99.0)
    mse, mse_err = calibrated_range("mse", x)
    assert minmax == pytest.approx(top, rel=1e-4)                 # min-max covers the largest value
    assert p99 == pytest.approx(float(torch.quantile(x.flatten(), 0.99)), rel=0.02)
    assert mse < minmax and mse_err <= minmax_err                 # MSE clips the tail, and errs less


def test_unknown_calibration_is_refused():
    with pytest.raises(StageError, match="unknown calibration 'kl'; valid: percentile, minmax, mse"):
        quantize_model(TinyCNN(num_classes=4), QuantSpec(calibration="kl"))


@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_ptq_with_each_calibration_exports_and_rebuilds_bit_exact(method, tiny_teacher, tmp_path):
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "p", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                   {"stage": "quantize", "mode": "ptq", "calibration": method, "bias_correction": method == "mse",
                    "calibration_batches": 2, "reduce_range": True},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output  # export's parity check passed against the fake-quant model
    stages = tmp_path / "run" / "stages"
    student = stage_artifacts(stages / "00-distill")[0]
    int8 = stage_artifacts(stages / "01-quantize")[0]
    assert int8.meta["quantization"]["calibration"] == method
    first = rebuild_int8(int8, rebuild_float(student))
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(first(x), rebuild_int8(int8, rebuild_float(student))(x))


def test_w4a8_exports_4_bit_weights_that_run_on_both_cpu_backends(tiny_teacher, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgekd.backends import BACKENDS
    from edgekd.backends import load_target

    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "w4", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                   {"stage": "quantize", "mode": "qat", "weight_bits": 4, "epochs": 1, "calibration_batches": 2},
                   {"stage": "export", "int8_min_top1_agreement": 0.9}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    path = tmp_path / "run" / "models" / "student-int8.onnx"
    model = onnx.load(str(path))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(i).ndim == 4]
    assert weights and all(w.min() >= -8 and w.max() <= 7 for w in weights)  # 4-bit values in INT8 storage
    assert any(w.min() < -4 or w.max() > 3 for w in weights)                # and the 4-bit range is used
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    for backend in ("onnxruntime", "openvino"):
        target = load_target(f"cpu-{backend}")
        compiled = BACKENDS.get(backend)().compile(path, target)
        assert np.isfinite(compiled(x)).all()


def _int8_conv_weights(path) -> dict[str, "np.ndarray"]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2}


def test_overrides_keep_the_first_layer_at_8_bits_and_the_classifier_in_float(tiny_teacher, tmp_path):
    import onnx

    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "o", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                   {"stage": "quantize", "mode": "ptq", "weight_bits": 4, "calibration_batches": 2,
                    "overrides": [{"match": "@first", "weight_bits": 8}, {"match": "classif*", "float": True}]},
                   {"stage": "export", "int8_min_top1_agreement": 0.9}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    path = tmp_path / "run" / "models" / "student-int8.onnx"
    weights = _int8_conv_weights(path)
    assert len(weights) == 2  # two convs quantized, the classifier's weight is not
    ranges = sorted((int(w.min()), int(w.max())) for w in weights.values())
    assert any(lo < -8 or hi > 7 for lo, hi in ranges)             # the first conv uses 8 bits
    assert any(lo >= -8 and hi <= 7 for lo, hi in ranges)          # the other stays at 4
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node].count("Gemm") == 1
    assert not {i.name for i in graph.initializer} & {i.name for i in graph.input}  # float weights are constants
    record = json.loads((tmp_path / "run" / "stages" / "01-quantize" / "stage.json").read_text())
    assert record["artifacts"][0]["meta"]["quantization"]["overrides"] == {"features.0": 8, "classifier": None}


def test_an_override_that_matches_no_layer_is_refused(tiny_teacher, tmp_path):
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "o", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "quantize", "mode": "ptq", "overrides": [{"match": "head", "float": True}]},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "stages.0.overrides.0.match: 'head' matches no conv/linear layer; e.g. " in " ".join(result.output.split())
    assert "(or @first, @last)" in " ".join(result.output.split())


def test_an_override_needs_exactly_one_precision():
    from pydantic import ValidationError

    from edgekd.stages.quantize.config import LayerOverride

    assert LayerOverride(match="a", float=True).weight_bits is None
    for bad in ({"match": "a"}, {"match": "a", "weight_bits": 8, "float": True}):
        with pytest.raises(ValidationError, match="either 'weight_bits'"):
            LayerOverride(**bad)


@pytest.fixture(scope="module")
def sensitive_model(tmp_path_factory):
    """DeadChannelNet trained on the tiny data, then given a huge weight on its always-zero channel."""
    from edgekd.config.schema import DataSpec
    from edgekd.data import build_splits
    from edgekd.train.evaluate import accuracy
    from edgekd.train.loop import fit
    from edgekd.train.objective import Objective

    from .models import DeadChannelNet

    splits = build_splits(DataSpec(**TINY_DATA))
    torch.manual_seed(0)
    model = DeadChannelNet(num_classes=4)
    fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=8, lr=0.01, weight_decay=0.0), LoopSettings(seed=0, batch_size=32), label="sensitive")
    with torch.no_grad():
        model.features[3].weight[:, 0] = 500.0  # reads the dead channel (always 0): float output unchanged
    assert accuracy(model, splits, "val") >= 0.9
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "sensitive.safetensors")


def _w4_recipe(path, **quantize) -> "Path":
    return write_yaml(path, {
        "name": "mp", "arch": "tests.models:DeadChannelNet", "data": TINY_DATA, "targets": [],
        "stages": [{"stage": "quantize", "mode": "ptq", "weight_bits": 4, "calibration_batches": 2, **quantize},
                   {"stage": "export", "int8_min_top1_agreement": 0.9}]})


def test_mixed_precision_meets_a_budget_that_plain_w4a8_misses(sensitive_model, tmp_path):
    plain = invoke("compress", sensitive_model, "--recipe", _w4_recipe(tmp_path / "p.yaml"), "--out", tmp_path / "p")
    # plain W4A8 collapses (a drop far beyond 0.05): the stage refuses to save it (fail_drop, default 0.10)
    assert plain.exit_code == 1 and "stages.0.fail_drop" in plain.output, plain.output
    assert float(plain.output.split("validation accuracy is ")[1].split(",")[0]) < 0.7
    assert not (tmp_path / "p" / "stages" / "00-quantize" / "stage.json").exists()

    mixed = invoke("compress", sensitive_model, "--recipe", _w4_recipe(tmp_path / "m.yaml", max_accuracy_drop=0.05),
                   "--out", tmp_path / "m")
    assert mixed.exit_code == 0, mixed.output
    art = json.loads((tmp_path / "m" / "stages" / "00-quantize" / "stage.json").read_text())["artifacts"][0]
    report = art["meta"]["metrics"]["mixed_precision"]
    assert report["float_layers"] == ["features.3"]              # the fewest: only the sensitive layer
    assert report["achieved_drop"] <= 0.05 < report["drop_all_quantized"]
    assert report["sensitivity"]["features.3"] < min(v for k, v in report["sensitivity"].items() if k != "features.3")
    assert art["meta"]["quantization"]["overrides"] == {"features.3": None}
    assert "1 layer(s) kept in float (features.3)" in " ".join(mixed.output.split())


def test_search_returns_layers_to_float_by_sensitivity_and_reports_an_unreachable_budget():
    from edgekd.stages.quantize.mixed_precision import search

    cost = {"a": 0.02, "b": 0.10, "c": 0.30}  # each quantized layer's share of the drop

    def drop_of(chosen):
        return sum(v for k, v in cost.items() if chosen.get(k, 4) is not None)

    result = search(["a", "b", "c"], {}, 0.05, drop_of, "k")
    assert result.float_layers == ["c", "b"] and result.achieved_drop == pytest.approx(0.02)
    assert result.sensitivity == pytest.approx({"a": 0.40, "b": 0.32, "c": 0.12})
    kept = search(["a", "b", "c"], {"c": 8}, 0.5, drop_of, "k")  # already met: nothing changes
    assert kept.float_layers == [] and kept.overrides == {"c": 8}
    with pytest.raises(StageError, match=r"k: max_accuracy_drop 0.0100 cannot be met: quantizing everything "
                                         r"drops 0.4700, and the best with 3 layer\(s\) in float is 0.0500"):
        search(["a", "b", "c"], {}, 0.01, lambda chosen: drop_of(chosen) + 0.05, "k")


@pytest.mark.parametrize("learned", [True, False])
def test_learned_scales_move_away_from_the_weight_statistics_during_qat(learned, tiny_teacher, tmp_path):
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "ls", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                   {"stage": "quantize", "mode": "qat", "learned_scales": learned, "epochs": 2, "lr": 0.01,
                    "calibration_batches": 2, "reduce_range": True},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    stages = tmp_path / "run" / "stages"
    student = stage_artifacts(stages / "00-distill")[0]
    int8 = stage_artifacts(stages / "01-quantize")[0]
    qmodel = rebuild_int8(int8, rebuild_float(student))
    conv = dict(qmodel.named_modules())["features.4"]
    import brevitas.nn as qnn

    from edgekd.stages.quantize.quantization import _weight_quant

    reference = qnn.QuantConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                                bias=False, weight_quant=_weight_quant(reduce_range=True))  # statistics only
    with torch.no_grad():
        reference.weight.copy_(conv.weight)
        from_stats, used = reference.quant_weight().scale.flatten(), conv.quant_weight().scale.flatten()
    # statistics-based scales follow the trained weights exactly; learned ones were trained away from them
    assert torch.allclose(used, from_stats, rtol=1e-6) is (not learned)


@pytest.mark.parametrize("input_quant,targets,dtype", [("auto", [], "UINT8"), ("unsigned", [], "UINT8"),
                                                      ("signed", [], "INT8"), ("auto", ["gpu-tensorrt"], "INT8")])
def test_graph_input_quantization_is_unsigned_for_cpus_or_signed_for_tensorrt(input_quant, targets, dtype,
                                                                              tiny_teacher, tmp_path):
    import onnx
    from onnx import numpy_helper

    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "iq", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": targets,
        "stages": [{"stage": "quantize", "mode": "ptq", "input_quant": input_quant, "calibration_batches": 2},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "run" / "models" / "teacher-int8.onnx")).graph
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    zero_point = next(i for i in graph.initializer if i.name == first_q.input[2])
    assert onnx.TensorProto.DataType.Name(zero_point.data_type) == dtype
    assert int(numpy_helper.to_array(zero_point)) == 0


@pytest.mark.parametrize("targets,centred,expected", [
    (["gpu-tensorrt"], False, "cannot run on tensorrt (target gpu-tensorrt)"),
    ([], True, "'unsigned' but the data has negative values")])
def test_unsigned_graph_input_is_refused_where_it_cannot_work(targets, centred, expected, tiny_teacher, tmp_path):
    data = TINY_DATA
    if centred:  # zero-mean inputs, as after the usual normalisation: UINT8 would clip half of them
        x = np.random.default_rng(0).normal(size=(64, 1, 16, 16)).astype(np.float32)
        np.savez(tmp_path / "d.npz", x=x, y=np.arange(64) % 4)
        data = {"source": "npz", "path": str(tmp_path / "d.npz"), "batch_size": 32}
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "iq", "arch": "edgekd:tiny_cnn", "data": data, "targets": targets,
        "teacher_check": not centred,  # the centred data are noise: no teacher beats chance on them
        "stages": [{"stage": "quantize", "mode": "ptq", "input_quant": "unsigned", "calibration_batches": 2},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "stages.0.input_quant" in result.output and expected in result.output


def test_preflight_quantizes_as_the_stage_will_so_a_bad_override_fails_before_distillation(tiny_teacher, tmp_path):
    """An override that names no layer used to pass preflight (which quantized with the defaults) and fail
    at the quantize stage, after distillation had trained; preflight now resolves the stage's overrides."""
    from .conftest import invoke

    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "o", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "distill", "epochs": 1},
                   {"stage": "quantize", "mode": "ptq", "overrides": [{"match": "features.99", "float": True}]},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 2
    assert "stages.1.overrides.0.match" in " ".join(result.output.split())
