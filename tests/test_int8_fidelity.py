"""The export check's three answers for an INT8 file (issue 23.2): matches, matches op by op, or diverges at
a named op; and the INT32-bias rule the locator found on the pretrained EfficientNet-Lite0."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

from edgekd.stages.export.config import ExportConfig
from edgekd.errors import StageError
from edgekd.stages.export.int8_fidelity import localize, model_quantizer_outputs, own_rounding_db
from edgekd.stages.quantize.quantization import calibrate, INT32_BIAS_LIMIT, quantize_model, QuantSpec
from edgekd.stages.export.int8_layouts import export_qdq
from edgekd.stages.export.stage import TorchSide, compare_with_torch
from tests.models import ResidualCNN


@torch.no_grad()
def predict_logits(model, x):
    out = model.eval()(x)
    return getattr(out, "value", out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A residual CNN (shared ReLU after an add, a strided conv, a linear head), quantized and exported."""
    torch.manual_seed(0)
    model = ResidualCNN(num_classes=6, in_channels=3).eval()
    x = torch.rand(24, 3, 16, 16)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(8))
    path = tmp_path_factory.mktemp("fidelity") / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    return qmodel, x, path


def _plant(path, tmp_path, op_type: str, new_type: str):
    """A copy of the file whose first ``op_type`` node computes ``new_type`` instead."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == op_type)
    node.op_type = new_type
    planted = tmp_path / f"planted-{new_type}.onnx"
    onnx.save(model, str(planted))
    return planted, node.name


def test_a_file_on_the_models_grids_matches(exported):
    qmodel, x, path = exported
    result = compare_with_torch(path, TorchSide(predict_logits(qmodel, x).numpy(), x, qmodel), "int8", ExportConfig(stage="export"), "q")
    assert result["verdict"] == "matches"
    assert "top1_agreement" in result and "decisive_samples" in result  # reported beside the verdict


def test_every_op_reproduces_the_models_integers_from_the_models_own_inputs(exported):
    qmodel, x, path = exported
    where = localize(path, qmodel, x[:1])
    assert where.aligned and where.sites and where.first_divergence is None
    assert all(site.worst_steps <= 1 for site in where.sites)


def test_a_gap_the_ops_do_not_explain_is_rounding_and_the_file_passes_op_by_op(exported):
    """With a threshold no float library meets (1000 dB), the SQNR alone would refuse the file: the
    op-by-op comparison finds every op exact and says why the outputs still differ."""
    qmodel, x, path = exported
    ref = predict_logits(qmodel, x).numpy()
    ref = ref + np.float32(1e-6) * np.sign(ref)  # a rounding-sized gap, so the SQNR is finite
    result = compare_with_torch(path, TorchSide(ref, x, qmodel), "int8", ExportConfig(stage="export", int8_min_sqnr_db=1000.0), "q")
    assert result["verdict"] == "matches op by op"
    assert result["localization"]["first_divergence"] is None and "amplifies" in result["judged_by"]
    # the model's own float32-vs-float64 distance is reported beside it (inf here: this small net rounds alike)
    assert result["own_rounding_db"] is not None and "float64" in result["judged_by"]


def test_the_models_own_rounding_is_measured_on_a_copy_that_leaves_the_model_in_float32(exported):
    qmodel, x, _ = exported
    before = predict_logits(qmodel, x[:4])
    floor = own_rounding_db(qmodel, x)
    assert floor is not None and floor > 40.0  # a 3-conv net: float32 and float64 agree to far below a step
    assert all(p.dtype == torch.float32 for p in qmodel.parameters())
    assert torch.equal(predict_logits(qmodel, x[:4]), before)


@pytest.mark.parametrize("op_type, wrong", [("Relu", "Abs"), ("Relu", "Softplus")])
def test_a_planted_wrong_op_is_named(exported, tmp_path, op_type, wrong):
    qmodel, x, path = exported
    planted, node_name = _plant(path, tmp_path, op_type, wrong)
    with pytest.raises(StageError, match=rf"something other than its fake-quant model at .*{wrong} '{node_name}'"):
        compare_with_torch(planted, TorchSide(predict_logits(qmodel, x).numpy(), x, qmodel), "int8", ExportConfig(stage="export"), "q")


def test_a_file_of_another_model_diverges(exported, tmp_path):
    """Weights of one conv changed in the file only: the locator names that conv."""
    from onnx import numpy_helper

    from edgekd.stages.export.onnx_folds import constant_value

    qmodel, x, path = exported
    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    dq = producer[conv.input[1]]
    weights = constant_value(model, dq.input[0])
    model.graph.initializer.append(numpy_helper.from_array((-weights).astype(weights.dtype), "planted_w"))
    dq.input[0] = "planted_w"
    planted = tmp_path / "planted-weights.onnx"
    onnx.save(model, str(planted))
    with pytest.raises(StageError, match=rf"at Conv '{conv.name}'"):
        compare_with_torch(planted, TorchSide(predict_logits(qmodel, x).numpy(), x, qmodel), "int8", ExportConfig(stage="export"), "q")


def test_tied_or_all_zero_logits_equal_to_the_reference_match(tmp_path):
    """Random-init models whose logits tie exactly: a file identical to its reference is never too far."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    for logits in (torch.zeros(8, 4), torch.full((8, 4), 2.5)):
        result = compare_with_torch(path, TorchSide(logits.numpy(), logits), "int8", ExportConfig(stage="export"), "s")
        assert result["verdict"] == "matches" and result["decisive_samples"] == 0
    with pytest.raises(StageError, match="-inf dB"):  # all-zero reference, non-zero file
        compare_with_torch(path, TorchSide(np.zeros((8, 4), np.float32), torch.ones(8, 4)), "int8", ExportConfig(stage="export"), "s")


def test_a_bias_too_large_for_int32_raises_its_channels_weight_scale():
    """A channel whose folded weights are ~1e-7 (EfficientNet-Lite0's dead depthwise channels) needs a bias
    of 4e9 steps: it saturated, and the export wrote a saturated positive bias as -2**31."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 3)).eval()
    with torch.no_grad():
        model[0].weight[1].mul_(1e-7)
        model[0].bias[1] = 0.5
    x = torch.rand(8, 3, 8, 8)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(4))
    conv = next(m for m in qmodel.modules() if type(m).__name__ == "QuantConv2d")
    seen = []
    handle = conv.bias_quant.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        qmodel(x[:1])
    handle.remove()
    bias = seen[0]
    assert float(bias.int().abs().max()) <= INT32_BIAS_LIMIT * 1.01
    assert float(bias.value[1]) == pytest.approx(0.5, rel=1e-3)  # the bias kept, not saturated


def test_quantizers_shared_by_a_concat_still_round_after_calibration(tmp_path):
    """Brevitas aligns a Concat's inputs by sharing one scaling module between their quantizers; its
    calibration_mode then restored that module as observer-only, so in torch those activations were no
    longer quantized while the exported file quantized them (squeezenet1_0: 20 dB apart)."""
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    class Fire(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.squeeze, self.relu = torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(inplace=True)
            self.a, self.relu_a = torch.nn.Conv2d(4, 8, 1), torch.nn.ReLU(inplace=True)
            self.b, self.relu_b = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(inplace=True)
            self.head = torch.nn.Linear(16, 5)

        def forward(self, x):
            x = self.relu(self.squeeze(x))
            return self.head(torch.cat([self.relu_a(self.a(x)), self.relu_b(self.b(x))], 1).mean((2, 3)))

    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    qmodel = quantize_model(Fire().eval(), QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(8))
    for proxy in [m for m in qmodel.modules() if isinstance(m, ActQuantProxyFromInjector) and m.is_quant_enabled]:
        out = proxy(torch.rand(1, 8, 4, 4) * 3)
        steps = (out.value / out.scale).detach()
        assert float((steps - steps.round()).abs().max()) < 1e-3, "an activation quantizer that does not round"
    path = tmp_path / "fire.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    result = compare_with_torch(path, TorchSide(predict_logits(qmodel, x).numpy(), x, qmodel), "int8", ExportConfig(stage="export"), "fire")
    assert result["verdict"] == "matches"


def test_the_op_by_op_comparison_runs_on_the_sample_whose_outputs_are_furthest_apart(exported):
    """Outputs can be bit-identical on most samples and far apart on a few (a random-init mobilenet_v2:
    6 of 8 identical, 2 at 8-12 dB): the locator must look at the furthest one, not the first."""
    qmodel, x, path = exported
    ref = predict_logits(qmodel, x).numpy().copy()
    ref[5] += np.float32(1e-3) * np.sign(ref[5])
    ref[2] += np.float32(1e-5) * np.sign(ref[2])
    result = compare_with_torch(path, TorchSide(ref, x, qmodel), "int8", ExportConfig(stage="export", int8_min_sqnr_db=1000.0), "q")
    assert result["localization"]["sample"] == 5
    assert "furthest sample (5)" in result["judged_by"]


def test_quantizer_outputs_are_recorded_before_an_in_place_op_rewrites_them():
    """Layerwise mode leaves a ``ReLU(inplace=True)`` after a conv's output quantizer: recorded without a
    copy, the quantizer's values were clamped afterwards, and dla34's file "diverged" by 115 steps on the
    negative half of its first conv's outputs."""
    import brevitas.nn as qnn

    from edgekd.stages.export.int8_fidelity import model_quantizer_outputs

    class QuantThenInPlaceRelu(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant = qnn.QuantIdentity(return_quant_tensor=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu_(self.quant(x))

    x = torch.linspace(-1, 1, 64).reshape(1, 64)
    (name, recorded), = model_quantizer_outputs(QuantThenInPlaceRelu(), x)
    assert recorded.min() < -0.9  # the quantizer's own output, negatives included


def test_the_onnx_runtime_layout_compares_op_by_op_past_the_quantizers_it_adds(tmp_path):
    """The u8s8 file has quantizers the model has not (a requantizer after a MaxPool, a pool's quantizer
    moved before its flatten): they re-read values already on a grid and are not the model's. Counted as
    the model's, a torchvision resnet34 at 224 (32.6 dB, every op exact) was refused as "cannot be compared
    op by op (55 activation quantizers, 57 QuantizeLinear nodes)"."""
    from torch import nn

    from edgekd.stages.export.int8_layouts import write_u8s8
    from edgekd.artifacts.qdq_rules import added_by_layout

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.rand(16, 3, 16, 16)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(8))
    s8s8, u8s8 = tmp_path / "q.onnx", tmp_path / "q.u8s8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], s8s8, 17)
    write_u8s8(s8s8, u8s8)
    added = [n for n in onnx.load(str(u8s8)).graph.node if n.op_type == "QuantizeLinear" and added_by_layout(n)]
    assert len(added) == 2  # after the MaxPool; before the Flatten
    ref = predict_logits(qmodel, x).numpy()
    ref = ref + np.float32(1e-6) * np.sign(ref)  # a rounding-sized gap: the verdict comes from the op-by-op pass
    result = compare_with_torch(u8s8, TorchSide(ref, x, qmodel), "int8", ExportConfig(stage="export", int8_min_sqnr_db=1000.0), "q")
    assert result["verdict"] == "matches op by op"
    assert result["localization"]["quantizers"] == len(model_quantizer_outputs(qmodel, x[:1]))
