"""A model torch.fx cannot trace whole is quantized in the parts it can (edgekd.stages.quantize.quant_capture.traced_parts).

MobileViT and MobileViT-v2 (timm) compute in Python with values the tracer only has as proxies; each spelling of such control flow below sits once in the model's own forward() and once inside a
block, around layers that trace. Every conv and linear must still be quantized, the quantized model with
quantizers off must compute the float model, and the INT8 file must run those layers INT8 on both CPU
runtimes and match its fake-quant model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.backends import BACKENDS
from edgekd.backends import make_target
from edgekd.artifacts.qdq_rules import layout_path
from edgekd.stages.quantize.quantization import float_path_difference, FLOAT_PATH_TOLERANCE, quantize_model, QuantSpec
from tests.int8_files import int8_files


def ceil_to_patches(x: torch.Tensor) -> torch.Tensor:
    """MobileViT: ``math.ceil`` of a traced size, then a resize only when it changes the size."""
    size = math.ceil(x.shape[-1] / 3) * 3
    return F.interpolate(x, size=(size, size), mode="bilinear") if size != x.shape[-1] else x


def square_side(x: torch.Tensor) -> torch.Tensor:
    """Swin-style token bookkeeping: the side of a square map from ``math.sqrt`` of a traced count."""
    side = int(math.sqrt(x.shape[-2] * x.shape[-1]))
    return x.reshape(x.shape[0], x.shape[1], side, side)


def autocast_off(x: torch.Tensor) -> torch.Tensor:
    """EfficientViT: autocast switched off on the tensor's own device type."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return x * 1.0


GLUE = {"math.ceil of a size": ceil_to_patches, "math.sqrt of a count": square_side}


class Block(nn.Module):
    """Traceable layers around untraceable glue, the tokens mixed by a list of linears called in a loop."""

    def __init__(self, glue, channels: int = 8) -> None:
        super().__init__()
        self.glue = glue
        self.local = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.mixers = nn.ModuleList(nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels))
                                    for _ in range(2))
        self.fuse = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.local(self.glue(x))
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for mixer in self.mixers:
            tokens = tokens + mixer(tokens)
        x = tokens.transpose(1, 2).reshape(b, c, h, w)
        return self.fuse(torch.cat([shortcut, F.interpolate(x, size=shortcut.shape[-2:])], 1))


class Head(nn.Module):
    """timm's classifier head signature: ``pre_logits`` is left at its default by the caller."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)


class PartlyTraceable(nn.Module):
    def __init__(self, glue) -> None:
        super().__init__()
        self.glue = glue
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = Block(glue)
        self.head = Head(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(self.glue(x))))


@pytest.mark.parametrize("spelling", sorted(GLUE))
def test_a_model_that_traces_only_in_parts_is_quantized_in_those_parts(spelling, tmp_path):
    import brevitas.nn as qnn

    torch.manual_seed(0)
    model = PartlyTraceable(GLUE[spelling]).eval()
    x = torch.rand(16, 3, 16, 16)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    assert qmodel.quant_mode == "parts"
    float_layers = [n for n, m in qmodel.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert not float_layers
    assert sum(isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear)) for m in qmodel.modules()) == 6
    assert float_path_difference(model, qmodel, x[:4]) < FLOAT_PATH_TOLERANCE

    qmodel, path = int8_files(model, x, tmp_path / "parts.onnx")  # quantized again, as the stages do
    for backend, layout in (("onnxruntime", "u8s8"), ("openvino", "s8s8")):
        target = make_target(name=backend, backend=backend, threads=1)
        compiled = BACKENDS.get(backend)().compile(layout_path(path, layout), target)
        counts = compiled.int8_layers()
        assert counts["int8"] == counts["total"] == 6, (backend, counts)

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the file read exactly
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    held_out = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        reference = qmodel(held_out).numpy()
    got = np.concatenate([session.run(None, {session.get_inputs()[0].name: s[None].numpy()})[0] for s in held_out])
    noise = float(np.mean((got - reference) ** 2))
    assert 10 * np.log10(float(np.mean(reference ** 2)) / max(noise, 1e-30)) > 30


def test_a_model_no_part_of_which_traces_still_says_it_cannot_be_traced():
    from edgekd.errors import StageError

    class Opaque(nn.Module):  # no children: nothing to trace alone
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return square_side(x) * self.weight[:, None, None]

    with pytest.raises(StageError, match="cannot be traced by torch.fx"):
        quantize_model(Opaque().eval(), example=torch.rand(1, 3, 4, 4))


def test_a_layer_override_reaches_a_layer_inside_a_traced_part():
    import brevitas.nn as qnn

    model = PartlyTraceable(ceil_to_patches).eval()
    qmodel = quantize_model(model, QuantSpec(overrides={"block.fuse": None, "block.mixers.1.1": 4}), example=torch.rand(1, 3, 16, 16))
    layers = dict(qmodel.named_modules())
    kept = [m for m in qmodel.modules() if isinstance(m, nn.Conv2d) and not isinstance(m, qnn.QuantConv2d)]
    assert len(kept) == 1 and kept[0].out_channels == 8 and kept[0].kernel_size == (1, 1)  # block.fuse, float
    four_bit = [m for m in layers.values() if isinstance(m, qnn.QuantLinear) and m.weight_quant.bit_width() == 4]
    assert len(four_bit) == 1
    with pytest.raises(Exception, match="not a conv or linear layer"):
        quantize_model(model, QuantSpec(overrides={"block.nothing": None}), example=torch.rand(1, 3, 16, 16))


def test_a_part_keeps_the_arguments_its_caller_passes_not_its_defaults():
    class PreLogitsCaller(nn.Module):  # calls its head for features, as a distillation wrapper would
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.head = Head(8, 5)
            self.project = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.project(self.head(self.stem(ceil_to_patches(x)), pre_logits=True))

    model = PreLogitsCaller().eval()
    x = torch.rand(4, 3, 16, 16)
    qmodel = quantize_model(model, example=x[:1])
    assert qmodel.quant_mode == "parts"
    assert float_path_difference(model, qmodel, x) < FLOAT_PATH_TOLERANCE  # head(pre_logits=False) fails here


def test_autocast_in_forward_no_longer_stops_tracing():
    """EfficientViT switches autocast off around its attention with ``device_type=v.device.type``: a proxy
    where torch wants a string. While tracing, autocast is a no-op (a graph records none of it anyway)."""
    model = PartlyTraceable(autocast_off).eval()
    x = torch.rand(4, 3, 16, 16)
    qmodel = quantize_model(model, example=x[:1])
    assert qmodel.quant_mode != "parts"
    assert float_path_difference(model, qmodel, x) < FLOAT_PATH_TOLERANCE
    assert torch.autocast is torch.amp.autocast_mode.autocast  # given back


class StemFirst(PartlyTraceable):
    """The image goes to the stem as it is (MobileViT: ``x = self.stem(x)``), the glue after it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.glue(self.stem(x))))


def test_in_parts_the_part_that_reads_the_image_quantizes_it_unsigned(tmp_path):
    """With ``unsigned_input`` the quantizer reading the [0, 1] image is UINT8, in parts mode too (the
    stem's own input quantizer there, not the model's): a signed one leaves half its grid unused."""
    import onnx
    from onnx import TensorProto

    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    qmodel, path = int8_files(StemFirst(GLUE["math.ceil of a size"]).eval(), x, tmp_path / "stem.onnx")
    assert qmodel.quant_mode == "parts"
    graph = onnx.load(str(path)).graph
    first = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name)
    zero = next(i for i in graph.initializer if i.name == first.input[2])
    assert zero.data_type == TensorProto.UINT8
