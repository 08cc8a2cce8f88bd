"""INT8 coverage on the architectures people deploy: every conv/matmul runs INT8 on both CPU runtimes.

Each model (random weights, 10 classes, small inputs) is quantized and exported the way the quantize and
export stages do it; ONNX Runtime compiles the u8s8 file and OpenVINO the s8s8 file (the layout each
target is given, ``edgekd.stages.export.int8_layouts``), and each runtime's own optimized graph is counted.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from edgekd.backends import BACKENDS
from edgekd.backends import make_target
from edgekd.stages.export.int8_layouts import write_u8s8
from edgekd.artifacts.qdq_rules import layout_path
from edgekd.stages.quantize.quantization import calibrate, quantize_model, QuantSpec
from edgekd.stages.export.int8_layouts import export_qdq

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
               "regnet_x_400mf", "shufflenet_v2_x1_0", "convnext_tiny",
               # the CI-sized subset of benchmarks/int8_zoo.py --all: one model per family the list above lacks
               "squeezenet1_0", "mnasnet0_5"]
TIMM = ["tf_efficientnet_lite0", "vit_tiny_patch16_224", "mobilenetv4_conv_small", "lcnet_050"]
SMALL_TORCHVISION_VIT = "vit (torchvision, nn.MultiheadAttention)"  # vit_b_16's code at 2 layers, width 32
SIZE = 32
MIN_INT8_FRACTION = 0.95


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in TIMM:
        timm = pytest.importorskip("timm", reason="timm is the 'vision' extra")
        extra = {"img_size": SIZE, "patch_size": 8} if name.startswith("vit") else {}
        return timm.create_model(name, pretrained=False, num_classes=10, **extra).eval()
    torchvision = pytest.importorskip("torchvision", reason="torchvision is the 'vision' extra")
    if name == SMALL_TORCHVISION_VIT:
        from torchvision.models.vision_transformer import VisionTransformer

        return VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                 mlp_dim=64, num_classes=10).eval()
    return getattr(torchvision.models, name)(num_classes=10).eval()


def int8_file(name: str, tmp_path: Path, with_model: bool = False) -> Path | tuple[Path, torch.nn.Module, torch.Tensor]:
    x = torch.rand(8, 3, SIZE, SIZE)
    qmodel = quantize_model(build(name), QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(4))
    path = tmp_path / f"{name.split()[0]}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    write_u8s8(path, layout_path(path, "u8s8"))
    return (path, qmodel, x) if with_model else path


@pytest.mark.parametrize("name", TORCHVISION + TIMM + [SMALL_TORCHVISION_VIT])
def test_every_conv_and_matmul_runs_int8_on_both_cpu_runtimes(name, tmp_path):
    """And each runtime's file computes what the fake-quant model computes, quantizer by quantizer: the
    export check's op-by-op comparison pairs them (the ORT file's added requantizers left out) and finds
    every op within a step, so a file below the SQNR threshold is still judged, never refused as unpairable."""
    from edgekd.stages.export.int8_fidelity import localize

    path, qmodel, x = int8_file(name, tmp_path, with_model=True)
    for backend, layout in (("onnxruntime", "u8s8"), ("openvino", "s8s8")):
        target = make_target(name=backend, backend=backend, threads=1)
        counts = BACKENDS.get(backend)().compile(layout_path(path, layout), target).int8_layers()
        assert counts["total"] > 0
        assert counts["int8"] >= MIN_INT8_FRACTION * counts["total"], (backend, counts)
        located = localize(layout_path(path, layout), qmodel, x[:1])
        assert located.aligned and located.first_divergence is None, (layout, located.to_json())


class ScaledConv(torch.nn.Conv2d):
    """A third-party conv subclass whose forward() is its own and no padding explains."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2.0


class SamePadConv(torch.nn.Conv2d):
    """TensorFlow-style "SAME" padding computed from the input at run time (like timm's Conv2dSame)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class CastingLinear(torch.nn.Linear):
    """A forward() of its own that computes its base's output (timm's ``Linear``, every timm classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), self.bias)


def test_conv_subclasses_are_quantized_or_named_with_the_reason(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(SamePadConv(3, 16, 3, stride=2), torch.nn.ReLU(), ScaledConv(16, 16, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), CastingLinear(32, 10)).eval()
    x = torch.rand(8, 3, 15, 15)  # odd size: "SAME" pads asymmetrically here
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    assert qmodel.kept_float == {"2": "ScaledConv has its own forward(), not a padded Conv2d"}
    calibrate(qmodel, x.split(4))
    with torch.no_grad():
        assert torch.allclose(qmodel(x), model(x), atol=0.1 * float(model(x).abs().max()))
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    import onnx

    weights = [i for i in onnx.load(str(path)).graph.initializer if len(i.dims) >= 2]
    int8 = [i for i in weights if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 3  # the SAME-padded conv, the plain conv and the classifier; ScaledConv's stays float


def test_relu6_keeps_its_ceiling_through_capture():
    """Brevitas' default turns ReLU6 into ReLU, which changes any model whose activations exceed 6."""
    from edgekd.stages.quantize.quant_capture import traced

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU6(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 14 * 14, 4)).eval()
    with torch.no_grad():
        model[0].weight.mul_(30.0)  # pre-activations far above 6
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert float(model[0](x).max()) > 6.0
        assert torch.allclose(traced(model, x[:1])(x), model(x), atol=1e-5)


def test_identity_between_a_conv_and_its_activation_adds_no_requantization():
    """timm leaves nn.Identity in drop/SE slots; with it kept, Brevitas requantized each conv's output
    right before its activation quantized it again (an extra Q/DQ pair per block on ORT)."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Identity(), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 4)).eval()
    qmodel = quantize_model(block, QuantSpec(unsigned_input=True), example=torch.rand(1, 3, 8, 8))
    modules = [n.target for n in qmodel.graph.nodes if n.op == "call_module"]
    assert not [m for m in modules if type(qmodel.get_submodule(m)) is torch.nn.Identity]
    # each conv feeds its QuantReLU directly (the classifier's own output quantizer aside)
    assert not {"_0_output_quant", "_3_output_quant"} & set(modules), modules


CLAMPED = {"relu6": lambda: torch.nn.ReLU6(), "hardtanh": lambda: torch.nn.Hardtanh(-2.0, 3.0),
           "relu": lambda: torch.nn.ReLU(), "hardswish": lambda: torch.nn.Hardswish(),
           "silu": lambda: torch.nn.SiLU(), "sigmoid": lambda: torch.nn.Sigmoid()}


@pytest.mark.parametrize("act", sorted(CLAMPED))
def test_with_quantization_off_the_quantized_model_computes_the_float_model(act):
    """Calibration runs the quantized model with its quantizers off: that path must be the float model,
    or every range is measured on another network. Brevitas maps ReLU6 to a ReLU whose ceiling only its
    quantizer enforces (pretrained EfficientNet-Lite0: ranges 2.5x too wide); checked with
    pre-activations far beyond every activation's knee, for each activation the maps rewrite."""
    from edgekd.stages.quantize.quantization import FLOAT_PATH_TOLERANCE, float_path_difference

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), CLAMPED[act](),
                                torch.nn.Conv2d(8, 8, 3, padding=1), CLAMPED[act](), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 4)).eval()
    with torch.no_grad():
        model[0].weight.mul_(40.0)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert float(model[1](model[0](x)).abs().max()) > 20.0  # far past ReLU6's 6 and Hardtanh's 3
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    assert float_path_difference(model, qmodel, x) < FLOAT_PATH_TOLERANCE


def test_relu6_calibrates_the_ranges_after_it_on_clamped_values():
    """The range after a ReLU6 -> conv is measured on clamped inputs: with the clamp missing it was
    the conv of unclamped values (2.5x too wide on EfficientNet-Lite0's bottlenecks)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(),
                                torch.nn.Conv2d(8, 8, 1), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 4)).eval()
    with torch.no_grad():
        model[0].weight.abs_().mul_(40.0)
        model[2].weight.fill_(1 / 8)
        model[2].bias.zero_()
    x = torch.rand(16, 3, 8, 8)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(4))
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    proxies = [m for m in qmodel.modules() if isinstance(m, ActQuantProxyFromInjector) and m.is_quant_enabled]
    with torch.no_grad():
        mid = model[2](model[1](model[0](x)))
        unclamped = model[2](torch.relu(model[0](x)))
    assert float(unclamped.abs().max()) > 3 * float(mid.abs().max())  # the bug would show
    widest = max(float(p.scale()) * 255 for p in proxies)
    assert widest < 2.5 * max(6.0, float(mid.abs().max()))  # scale x 255 is 2x a signed range


def test_tensor_code_on_quantized_activations_runs():
    """A slice (ghostnet's ``out[:, :c]``), an int index, a method QuantTensor lacks (lcnet's ``x.mean``)
    and an attribute it lacks (timm EfficientViT's ``v.dtype``) on a quantized activation: Brevitas'
    QuantTensor is a NamedTuple, so ``x[:, :4]`` raised and ``x[0]`` silently returned its value field."""
    class Sliced(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()
            self.conv2, self.head = torch.nn.Conv2d(4, 4, 1), torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.conv(x))[:, :4]
            pooled = y.mean((2, 3), keepdim=True).to(y.dtype)  # lcnet's squeeze-excite; EfficientViT's dtype
            return self.head(self.conv2(pooled).flatten(1))

    torch.manual_seed(0)
    model = Sliced().eval()
    x = torch.rand(4, 3, 8, 8)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(2))
    with torch.no_grad():
        out = qmodel(x)
        out = getattr(out, "value", out)
        assert out.shape == (4, 3)
        assert float((out - model(x)).abs().max()) < 0.1 * float(model(x).abs().max()) + 0.05


@pytest.mark.parametrize("spelling", ["a - b", "torch.sub(a, b)"])
def test_a_difference_of_two_quantized_activations_runs(spelling):
    """``a - b`` of two activations on different grids (timm's FastViT RepMixer ``mixer(x) - norm(x)``):
    Brevitas aligns an add's operands but not a subtraction's, and its QuantTensor refused the pair in
    eval mode ("Scaling factors are different") at the first calibration pass."""
    class Difference(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 1)
            self.relu_a, self.relu_b, self.head = torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.relu_a(self.a(x)), self.relu_b(self.b(x) * 4.0)  # two ranges, two grids
            return self.head((a - b if spelling == "a - b" else torch.sub(a, b)).mean((2, 3)))

    torch.manual_seed(0)
    model, x = Difference().eval(), torch.rand(4, 3, 8, 8)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(2))
    with torch.no_grad():
        out = qmodel(x)
        out = getattr(out, "value", out)
    assert float((out - model(x)).abs().max()) < 0.1 * float(model(x).abs().max()) + 0.05


MEAN_SPELLINGS = {  # every way Python code writes a spatial mean, as models in the zoo write it
    "x.mean((2, 3))": lambda x: x.mean((2, 3)),
    "x.mean([2, 3])": lambda x: x.mean([2, 3]),
    "x.mean(dim=(2, 3))": lambda x: x.mean(dim=(2, 3)),
    "x.mean((2, 3), keepdim=False)": lambda x: x.mean((2, 3), keepdim=False),  # timm's RepViT head
    "x.mean((2, 3), False)": lambda x: x.mean((2, 3), False),
    "x.mean((2, 3), keepdim=True)": lambda x: x.mean((2, 3), keepdim=True),
    "x.mean((2, 3), True)": lambda x: x.mean((2, 3), True),
    "x.mean(dim=(2, 3), keepdim=True)": lambda x: x.mean(dim=(2, 3), keepdim=True),
    "x.mean(-1)": lambda x: x.mean(-1),
    "x.mean()": lambda x: x.mean().expand(x.shape[0], 1),
}


@pytest.mark.parametrize("spelling", sorted(MEAN_SPELLINGS))
def test_every_spelling_of_a_mean_quantizes_to_the_float_model(spelling):
    """Brevitas turns a spatial mean into a pool, reading one spelling of the call: ``keepdim=False``
    written out (timm's RepViT) crashed it, a positional ``keepdim`` was lost and ``dim=`` mangled. Each
    spelling must quantize and, with quantizers off, compute the float model's outputs and shape."""
    from edgekd.stages.quantize.quantization import FLOAT_PATH_TOLERANCE, float_path_difference

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(MEAN_SPELLINGS[spelling](self.relu(self.conv(x))), 1)

    torch.manual_seed(0)
    model, x = Pooled().eval(), torch.rand(4, 3, 8, 8)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    assert float_path_difference(model, qmodel, x) < FLOAT_PATH_TOLERANCE


ACTIVATION_SPELLINGS = {  # (module, its spellings as calls): how models in the zoo write activations
    "torch.sigmoid(s)": (torch.nn.Sigmoid, lambda s: torch.sigmoid(s)),
    "s.sigmoid()": (torch.nn.Sigmoid, lambda s: s.sigmoid()),  # timm's Sigmoid module, regnety's gates
    "s.sigmoid_()": (torch.nn.Sigmoid, lambda s: s.sigmoid_()),
    "F.sigmoid(s)": (torch.nn.Sigmoid, lambda s: torch.nn.functional.sigmoid(s)),
    "torch.relu(s)": (torch.nn.ReLU, lambda s: torch.relu(s)),
    "s.relu()": (torch.nn.ReLU, lambda s: s.relu()),
    "F.silu(s)": (torch.nn.SiLU, lambda s: torch.nn.functional.silu(s)),
    "F.silu(s, inplace=True)": (torch.nn.SiLU, lambda s: torch.nn.functional.silu(s, inplace=True)),
    "F.hardswish(s)": (torch.nn.Hardswish, lambda s: torch.nn.functional.hardswish(s)),
    "F.hardsigmoid(s)": (torch.nn.Hardsigmoid, lambda s: torch.nn.functional.hardsigmoid(s)),
    "F.gelu(s)": (torch.nn.GELU, lambda s: torch.nn.functional.gelu(s)),
    "F.gelu(s, approximate='tanh')": (lambda: torch.nn.GELU(approximate="tanh"),
                                      lambda s: torch.nn.functional.gelu(s, approximate="tanh")),
    "s.tanh()": (torch.nn.Tanh, lambda s: s.tanh()),
}


def _activation_quantizers(qmodel: torch.nn.Module) -> int:
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    return sum(isinstance(m, ActQuantProxyFromInjector) and m.is_quant_enabled for m in qmodel.modules())


@pytest.mark.parametrize("spelling", sorted(ACTIVATION_SPELLINGS))
def test_an_activation_written_as_a_call_is_quantized_as_its_module_is(spelling):
    """Brevitas quantizes activations it finds as modules; ``x.sigmoid()`` (timm's Sigmoid, every regnety
    gate) stayed float, and ONNX Runtime then ran the gate and its Mul in float. Each spelling must get as
    many activation quantizers as the module spelling and, with quantizers off, compute the float model."""
    from edgekd.stages.quantize.quantization import FLOAT_PATH_TOLERANCE, float_path_difference

    make_module, call = ACTIVATION_SPELLINGS[spelling]

    class Gated(torch.nn.Module):  # a squeeze-excite block: features times an activation of a conv of them
        def __init__(self, as_module: bool) -> None:
            super().__init__()
            self.conv, self.relu = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()
            self.gate_conv, self.head = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 4, 1)
            self.act = make_module() if as_module else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.conv(x))
            s = self.gate_conv(y)
            return self.head(y * (self.act(s) if self.act is not None else call(s)))

    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    written, reference = Gated(as_module=False).eval(), Gated(as_module=True).eval()
    reference.load_state_dict(written.state_dict())
    qmodel = quantize_model(written, QuantSpec(unsigned_input=True), example=x[:1])
    assert _activation_quantizers(qmodel) == _activation_quantizers(
        quantize_model(reference, QuantSpec(unsigned_input=True), example=x[:1]))
    assert float_path_difference(written, qmodel, x) < FLOAT_PATH_TOLERANCE


class _Scaled(torch.nn.Module):
    """conv -> ReLU -> conv (or linear) -> times a constant -> conv: a layer scale as models write it."""

    def __init__(self, scale, linear: bool = False, second_reader: bool = False) -> None:
        super().__init__()
        self.stem, self.relu = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()
        self.layer = torch.nn.Linear(8, 8) if linear else torch.nn.Conv2d(8, 8, 3, padding=1)
        self.gamma = torch.nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.scale, self.linear, self.second_reader = scale, linear, second_reader
        self.head, self.drop = torch.nn.Conv2d(8, 4, 1), torch.nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        if self.linear:  # the scale meets the linear's output before the permute back
            y = self.scale(self, self.layer(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        else:
            y = self.layer(x)
            y = self.scale(self, y) + y if self.second_reader else self.scale(self, y)
        return self.head(x + y)


LAYER_SCALES = {  # spelling -> (scale, linear?, foldable?)
    "x * gamma[C,1,1]": (lambda m, y: y * m.gamma, False, True),  # FastViT's LayerScale2d
    "gamma * x": (lambda m, y: m.gamma * y, False, True),
    "x.mul_(gamma.view(1,-1,1,1))": (lambda m, y: y.mul_(m.gamma.view(1, -1, 1, 1)), False, True),  # timm LayerScale2d
    "torch.mul(x, gamma)": (lambda m, y: torch.mul(y, m.gamma), False, True),
    "x * 0.5": (lambda m, y: y * 0.5, False, True),
    "dropout(x) * gamma": (lambda m, y: m.drop(y) * m.gamma, False, True),  # FastViT: mlp -> drop -> layer_scale
    "linear: x * gamma[C]": (lambda m, y: y * m.gamma.flatten(), True, True),  # EdgeNeXt, ConvNeXt blocks
    "x * spatial map": (lambda m, y: y * torch.linspace(0.5, 1.5, y.shape[-1]), False, False),  # not per channel
    "x * y": (lambda m, y: y * y, False, False),
}


@pytest.mark.parametrize("spelling", sorted(LAYER_SCALES))
def test_a_per_channel_constant_after_a_layer_folds_into_it(spelling):
    """A layer scale left as a multiplication runs in float between a DQ and a Q on ONNX Runtime
    (FastViT, EdgeNeXt); a per-channel constant after a conv/linear with no other reader folds into its
    weights, exactly. Anything else (a spatial map, an activation) stays, and the model is unchanged."""
    from edgekd.stages.quantize.quant_capture import traced

    scale, linear, foldable = LAYER_SCALES[spelling]
    torch.manual_seed(0)
    model, x = _Scaled(scale, linear).eval(), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
    graph = traced(copy.deepcopy(model), x[:1])
    muls = [n for n in graph.graph.nodes if str(n.target) in ("mul", "mul_", "<built-in function mul>")
            or n.target is torch.mul]
    assert (not muls) == foldable, [n.format_node() for n in muls]
    with torch.no_grad():
        assert torch.allclose(graph(x), want, atol=1e-5, rtol=1e-4)


def test_a_scale_on_a_layer_output_read_twice_is_not_folded():
    from edgekd.stages.quantize.quant_capture import traced

    torch.manual_seed(0)
    model, x = _Scaled(LAYER_SCALES["x * gamma[C,1,1]"][0], second_reader=True).eval(), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
    graph = traced(copy.deepcopy(model), x[:1])
    with torch.no_grad():
        assert torch.allclose(graph(x), want, atol=1e-5, rtol=1e-4)
    assert any(n.target in ("mul",) or n.target is torch.mul or "mul" in str(n.target) for n in graph.graph.nodes)
