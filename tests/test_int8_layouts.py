"""The u8s8 layout: the same quantization as the s8s8 file, in the form ONNX Runtime's QDQ fusions take."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgekd.backends import BACKENDS
from edgekd.backends import make_target
from edgekd.stages.export.int8_layouts import write_u8s8
from edgekd.artifacts.qdq_rules import layout_path
from edgekd.stages.quantize.quantization import calibrate, quantize_model, QuantSpec
from edgekd.stages.export.int8_layouts import export_qdq


class InvertedResidual(nn.Module):
    """A MobileNetV3-like block: expand (Hardswish), depthwise (ReLU), project, residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16))
        self.tail = nn.Sequential(nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(self.tail(x).mean((2, 3)))


def exported(tmp_path):
    torch.manual_seed(0)
    model = InvertedResidual().eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so signed sums really occur
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(16, 3, 16, 16)
    path, u8, changed = int8_files(model, x, tmp_path / "block.onnx")
    return path, u8, changed, x


def int8_files(model: nn.Module, x: torch.Tensor, path, **quant):
    """PTQ of ``model`` on ``x`` and both INT8 layouts, as the quantize and export stages make them:
    (s8s8 path, u8s8 path, activation quantizers the u8s8 file changed)."""
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True, **quant), example=x[:1])
    calibrate(qmodel, x.split(8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    u8 = layout_path(path, "u8s8")
    return path, u8, write_u8s8(path, u8)


def run_exact(path, x):
    """ORT with graph optimizations off: QDQ interpreted op by op, no INT8 kernels."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(len(x))])


def test_u8s8_file_computes_exactly_what_the_s8s8_file_computes(tmp_path):
    path, u8, changed, x = exported(tmp_path)
    assert u8.name == "block.u8s8.onnx"
    assert changed > 0
    np.testing.assert_array_equal(run_exact(path, x), run_exact(u8, x))
    graph = onnx.load(str(u8)).graph
    types = {i.name: i.data_type for i in graph.initializer}
    assert {types[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"} == {onnx.TensorProto.UINT8}
    weights = [i for i in graph.initializer if len(i.dims) >= 2]
    assert weights and all(i.data_type == onnx.TensorProto.INT8 for i in weights)  # weights stay s8


def test_onnx_runtime_runs_every_conv_int8_only_in_the_u8s8_layout(tmp_path):
    """mobilenet_v2: convs reading a signed residual sum and writing an unsigned ReLU6 output stay float
    on ORT in the s8s8 layout (INT8-NOTES trap 10); in u8s8 every conv and the classifier run INT8."""
    torchvision = pytest.importorskip("torchvision", reason="torchvision is the 'vision' extra")
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    qmodel = quantize_model(torchvision.models.mobilenet_v2(num_classes=10).eval(), QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(4))
    path = tmp_path / "mobilenet_v2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    write_u8s8(path, layout_path(path, "u8s8"))
    target = make_target(name="ort", backend="onnxruntime", threads=1)
    backend = BACKENDS.get("onnxruntime")()
    s8_counts = backend.compile(path, target).int8_layers()
    u8_counts = backend.compile(layout_path(path, "u8s8"), target).int8_layers()
    assert u8_counts["int8"] == u8_counts["total"] == 53, u8_counts
    assert s8_counts["int8"] <= 0.8 * s8_counts["total"], s8_counts


def test_a_float_activation_after_a_conv_gets_its_input_quantized(tmp_path):
    """Without a quantizer between a conv and its Hardswish, ORT keeps the conv float (no Q to fuse)."""
    path, _, _, _ = exported(tmp_path)
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    hardswish = next(n for n in graph.node if n.op_type == "HardSwish")
    assert producer[hardswish.input[0]].op_type == "DequantizeLinear"


def test_onnx_runtime_names_each_float_layer_and_why_it_was_not_fused(tmp_path):
    """The s8s8 mobilenet_v2 on ORT: the layers left in float are named, with the mixed activation types
    (also where a ReLU6's Clip stands between the conv and its quantizer: ORT folds that Clip, so it is
    not the cause)."""
    torchvision = pytest.importorskip("torchvision", reason="torchvision is the 'vision' extra")
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    qmodel = quantize_model(torchvision.models.mobilenet_v2(num_classes=10).eval(), QuantSpec(unsigned_input=True))
    calibrate(qmodel, x.split(4))
    path = tmp_path / "mobilenet_v2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    counts = BACKENDS.get("onnxruntime")().compile(path, make_target(name="ort", backend="onnxruntime")).int8_layers()
    floats = counts["float_layers"]
    assert len(floats) == counts["total"] - counts["int8"] > 0
    assert all("ORT fuses only equal activation types" in why for why in floats.values()), floats
    assert any(why.startswith("int8 input but uint8 output") for why in floats.values()), floats


@pytest.mark.parametrize("act, gate_op", [(nn.SiLU, "QLinearSigmoid"), (nn.Hardswish, "HardSigmoid")])
def test_silu_and_hardswish_run_their_product_as_int8_mul_on_onnx_runtime(tmp_path, act, gate_op):
    """Quantized as one activation, SiLU ran as float Sigmoid + Mul between a DQ and a Q on ORT, and
    Hardswish as ORT's float HardSigmoid + Mul; split, the product is a QLinearMul (as quantize_static's).
    (Hardswish is split for ONNX-Runtime-only recipes: ``hardswish: auto``.)"""
    import collections

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act(), nn.Conv2d(8, 8, 3, padding=1), act(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    x = torch.rand(8, 3, 8, 8)
    path, u8, _ = int8_files(model, x, tmp_path / f"{act.__name__}.onnx", hardswish="split")
    np.testing.assert_array_equal(run_exact(path, x), run_exact(u8, x))
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / f"{act.__name__}.opt.onnx")
    ort.InferenceSession(str(u8), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    assert ops[gate_op] == 2 and ops["QLinearMul"] == 2 and ops["QLinearConv"] == 2, ops
    assert not ops["Sigmoid"] and not ops["Mul"] and not ops["HardSwish"], ops


def test_hardswish_is_split_only_for_recipes_whose_targets_all_run_onnx_runtime():
    from edgekd.backends import make_target as T
    from edgekd.run.recipe import load_recipe
    from edgekd.run.targets import target_facts
    from edgekd.stages.base import resolve_stages

    recipe = load_recipe("default")
    ort, ov = T(name="o", backend="onnxruntime"), T(name="v", backend="openvino")

    def chosen(targets):
        settled = resolve_stages(recipe, target_facts(targets))
        return {s.hardswish for s in settled.stages if s.stage == "quantize"}

    assert chosen([ort]) == {"split"} and chosen([ort, ov]) == {"fused"} and chosen([ov]) == {"fused"}


class GroupedConvs(nn.Module):
    """A conv of each grouping a CNN uses (FastViT downsamples with the third): dense, depthwise (1 in, 1 out
    per group), a channel multiplier (1 in, 2 out per group) and a grouped conv (2 in, 2 out per group).
    Also a ``--arch`` factory (``tests.test_int8_layouts:GroupedConvs``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU())
        self.multiplier = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=16), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=16), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(self.multiplier(self.depthwise(self.dense(x))))
        return self.head(x.mean((2, 3)))


def test_the_onednn_layout_floats_exactly_the_convs_openvino_has_no_int8_kernel_for(tmp_path):
    """``s8s8-onednn`` (OpenVINO CPU): only the channel-multiplier conv reads float weights, the values of
    its INT8 grid, so the file computes what the s8s8 file computes; OpenVINO runs that conv in float,
    says why, and runs the other convs INT8. A model without such a conv gets no such file."""
    from edgekd.stages.export.int8_layouts import onednn_float_convs, write_s8s8_onednn
    from edgekd.artifacts.qdq_rules import ONEDNN_LAYOUT

    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    path, _, _ = int8_files(GroupedConvs().eval(), x, tmp_path / "grouped.onnx")
    floated = onednn_float_convs(path)
    assert len(floated) == 1 and "multiplier" in floated[0], floated
    onednn = layout_path(path, ONEDNN_LAYOUT)
    assert write_s8s8_onednn(path, onednn) == 1
    np.testing.assert_array_equal(run_exact(path, x), run_exact(onednn, x))
    graph = onnx.load(str(onednn)).graph
    producer = {o: n for n in graph.node for o in n.output}
    float_weights = [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] not in producer]
    assert float_weights == floated
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) == \
        sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(path)).graph.node) - 1  # its weights' DQ went

    pytest.importorskip("openvino", reason="openvino is the 'openvino' extra")
    target = make_target(name="ov", backend="openvino", threads=1)
    assert BACKENDS.get("openvino")().int8_layouts(target)[0] == ONEDNN_LAYOUT
    layers = BACKENDS.get("openvino")().compile(onednn, target).int8_layers()
    assert layers["float_by_layout"] == 1 and layers["int8"] == layers["total"] - 1, layers
    assert all("s8s8-onednn" in why for why in layers["float_layers"].values()), layers["float_layers"]
    plain, _, _ = int8_files(InvertedResidual().eval(), x, tmp_path / "block.onnx")
    assert onednn_float_convs(plain) == []


def test_compress_writes_the_onednn_layout_where_it_differs_and_openvino_measures_it(tmp_path):
    import json

    from tests.conftest import FAST_LATENCY, TINY_DATA, invoke, save_model, write_yaml

    pytest.importorskip("openvino", reason="openvino is the 'openvino' extra")
    torch.manual_seed(0)
    checkpoint = save_model(GroupedConvs(num_classes=4, in_channels=1), tmp_path / "grouped.safetensors")
    target = write_yaml(tmp_path / "ov.yaml", {"name": "grouped-ov", "backend": "openvino", "threads": 1,
                                               "latency": FAST_LATENCY})
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "grouped", "arch": "tests.test_int8_layouts:GroupedConvs", "data": TINY_DATA,
        "teacher_check": False,  # untrained: this test is about the file's layout
        "targets": [str(target)],
        "stages": [{"stage": "quantize", "mode": "ptq", "calibration_batches": 2}, {"stage": "export"}]})
    result = invoke("compress", checkpoint, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    int8 = next(k for k, v in manifest["models"].items() if v["meta"].get("layouts"))
    assert set(manifest["models"][int8]["meta"]["layouts"]) == {"u8s8", "s8s8-onednn"}
    assert manifest["models"][int8]["meta"]["parity"]["s8s8-onednn"]["top1_agreement"] == 1.0
    row = json.loads((tmp_path / "run" / "measurements" / f"{int8}@grouped-ov.json").read_text())
    assert row["onnx"].endswith(f"{int8}.s8s8-onednn.onnx")
    assert row["int8_layers"]["float_by_layout"] == 1
