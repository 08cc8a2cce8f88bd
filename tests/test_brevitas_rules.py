"""Chunks, splits and sizes do not make Brevitas' requantizers signed; zero pads need no requantizer and fold into the conv (edgekd.stages.quantize.brevitas_rules, edgekd.stages.export.onnx_folds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.stages.quantize.brevitas_rules import brevitas_rules, equalization_skipped_when_off
from edgekd.stages.quantize.quantization import quantize_model, QuantSpec


class ShuffleBlocks(nn.Module):
    """Two shufflenet units: ``cat(x1, branch(x2))`` of ReLU outputs, a channel shuffle written with
    ``x.size()`` and ``.contiguous()``, and the next unit's ``chunk``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                                    nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(16, 10)

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w)
        return torch.transpose(x, 1, 2).contiguous().view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for branch in self.branches:
            x1, x2 = x.chunk(2, dim=1)
            x = self.shuffle(torch.cat((x1, branch(x2)), dim=1))
        return self.head(x.mean((2, 3)))


def test_concats_of_relu_outputs_read_through_chunks_get_unsigned_quantizers():
    torch.manual_seed(0)
    qmodel = quantize_model(ShuffleBlocks().eval(), QuantSpec(unsigned_input=True), example=torch.rand(1, 3, 8, 8))
    concat_quants = {n: m for n, m in qmodel.named_modules() if n.startswith("cat") and n.endswith("_quant") and "." not in n}
    assert concat_quants, "the second unit's concat has its own requantizer"
    assert {n: m.act_quant.is_signed for n, m in concat_quants.items()} == dict.fromkeys(concat_quants, False)


def test_brevitas_gets_its_own_sign_rule_back_even_when_quantizing_fails():
    from brevitas.graph import quantize_impl

    original = quantize_impl.are_inputs_unsigned
    with pytest.raises(RuntimeError, match="inside"):
        with brevitas_rules():
            assert quantize_impl.are_inputs_unsigned is not original
            raise RuntimeError("inside")
    assert quantize_impl.are_inputs_unsigned is original


def test_a_same_padded_conv_exports_as_one_int8_conv_with_asymmetric_pads(tmp_path):
    """ZeroPad2d + Conv2d (what timm's Conv2dSame becomes): no requantizer after the pad, the pad folded
    into the conv, the file computing what the fake-quant model computes, every conv INT8 on ORT."""
    import warnings

    import numpy as np
    import onnx
    import onnxruntime as ort

    from edgekd.backends import BACKENDS
    from edgekd.backends import make_target
    from edgekd.stages.export.int8_layouts import write_u8s8
    from edgekd.artifacts.qdq_rules import layout_path
    from edgekd.stages.quantize.quantization import calibrate
    from edgekd.stages.export.int8_layouts import export_qdq

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.ZeroPad2d((0, 1, 0, 1)),
                          nn.Conv2d(8, 8, 3, stride=2, groups=8), nn.ReLU6(), nn.Conv2d(8, 16, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    x = torch.rand(16, 3, 16, 16)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=True), example=x[:1])
    assert "_3_input_quant" not in dict(qmodel.named_children()), "no requantizer between the pad and its conv"
    calibrate(qmodel, x.split(8))
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    graph = onnx.load(str(path)).graph
    assert "Pad" not in {n.op_type for n in graph.node}
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads
    # the file interpreted exactly (optimizations off: DequantizeLinear -> float conv); with them on, ORT's
    # fused u8s8 kernels saturate on x86 CPUs without VNNI and differ by up to 0.06 here (AVX2 EPYC)
    exact = ort.SessionOptions()
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), exact, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = qmodel(x[:1]).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})[0], expected,
                               atol=1e-4)
    write_u8s8(path, layout_path(path, "u8s8"))
    target = make_target(name="onnxruntime", backend="onnxruntime", threads=1)
    counts = BACKENDS.get("onnxruntime")().compile(layout_path(path, "u8s8"), target).int8_layers()
    assert counts["int8"] == counts["total"] == 4, counts.get("float_layers")


def test_brevitas_gets_its_lists_back_after_the_block():
    from brevitas.graph import quantize_impl

    before = (quantize_impl.PRECISION_PRESERVING_MODULES, quantize_impl.SIGN_PRESERVING_MODULES)
    with brevitas_rules():
        assert nn.ZeroPad2d in quantize_impl.PRECISION_PRESERVING_MODULES
    assert (quantize_impl.PRECISION_PRESERVING_MODULES, quantize_impl.SIGN_PRESERVING_MODULES) == before


UNSIZABLE = {  # inputs Brevitas' equalization walk cannot give a channel count
    "slice": lambda x: x[:, :1],
    "sigmoid": torch.sigmoid,
    "graph input": lambda x: x,
    "pooled": lambda x: nn.functional.avg_pool2d(x, 3, 1, 1),
}


class ConcatOfConcat(nn.Module):
    """rexnet's channel bookkeeping in small: a concat with an input Brevitas cannot size feeds a concat."""

    def __init__(self, unsizable) -> None:
        super().__init__()
        self.unsizable = unsizable
        channels = 8 + unsizable(torch.zeros(1, 3, 4, 4)).shape[1]
        self.a, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(channels, 4, 1)
        self.b = nn.Conv2d(channels + 4, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.unsizable(x)], 1)
        return self.b(torch.cat([y, self.c(y)], 1))


@pytest.mark.parametrize("kind", sorted(UNSIZABLE))
def test_a_concat_of_a_concat_with_an_unsizable_input_is_quantized_in_graph_mode(kind):
    import brevitas.nn as qnn

    qmodel = quantize_model(ConcatOfConcat(UNSIZABLE[kind]).eval(), example=torch.randn(1, 3, 8, 8))
    assert qmodel.quant_mode == "graph"
    assert sum(isinstance(m, qnn.QuantConv2d) for m in qmodel.modules()) == 3


def test_equalization_is_skipped_only_when_asked_for_no_iterations_and_comes_back():
    from brevitas.graph import quantize as graph_quantize

    original = graph_quantize.EqualizeGraph
    with equalization_skipped_when_off():
        graph = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)))
        assert graph_quantize.EqualizeGraph(iterations=0).apply(graph) is graph
        assert isinstance(graph_quantize.EqualizeGraph(iterations=2).real, original)
    assert graph_quantize.EqualizeGraph is original


PIECES = {  # ways a linear bottleneck's output is read in two pieces (timm's rexnet slices)
    "slices": lambda y, c: (y[:, :c], y[:, c:]),
    "split": lambda y, c: torch.split(y, [c, y.shape[1] - c], dim=1),
    "chunk": lambda y, c: y.chunk(2, dim=1),
}


class PartialShortcut(nn.Module):
    """rexnet's block: the shortcut is added to the first channels of the output, the rest pass as they are."""

    def __init__(self, pieces) -> None:
        super().__init__()
        self.pieces = pieces
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(8, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16))  # linear: no activation
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.stem(x)
        first, rest = self.pieces(self.project(self.expand(shortcut)), 8)
        return self.head(torch.cat([first + shortcut, rest], dim=1))


@pytest.mark.parametrize("spelling", sorted(PIECES))
def test_a_layer_read_only_in_pieces_runs_int8_on_onnx_runtime(spelling, tmp_path):
    from edgekd.backends import BACKENDS
    from edgekd.backends import make_target
    from edgekd.artifacts.qdq_rules import layout_path
    from tests.int8_files import int8_files

    torch.manual_seed(0)
    model = PartialShortcut(PIECES[spelling]).eval()
    x = torch.rand(16, 3, 12, 12)
    with torch.no_grad():  # BatchNorm statistics of a trained model, not the init's
        model.train()(x)
    _, path = int8_files(model, x, tmp_path / "pieces.onnx")
    target = make_target(name="onnxruntime", backend="onnxruntime", threads=1)
    counts = BACKENDS.get("onnxruntime")().compile(layout_path(path, "u8s8"), target).int8_layers()
    assert counts["int8"] == counts["total"] == 4, counts.get("float_layers")


def test_chunk_pieces_keep_their_grid_so_no_piece_is_requantized(tmp_path):
    """shufflenet's ``cat(x1, branch(x2))`` with ``x1, x2 = x.chunk(2)``: each piece was requantized (x1
    onto the concat's grid, x2 onto a signed input quantizer of the branch's conv) and ONNX Runtime ran
    26 float Slices with their Q/DQ pairs, 1.4x quantize_static's latency. Aligned through the pieces,
    the concat's grid is the one they were cut from: no QuantizeLinear reads a piece, every layer is INT8
    on both runtimes, and the file matches its fake-quant model quantizer by quantizer."""
    import onnx

    from edgekd.backends import BACKENDS
    from edgekd.backends import make_target
    from edgekd.stages.export.int8_fidelity import localize
    from edgekd.artifacts.qdq_rules import layout_path
    from tests.int8_files import int8_files

    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    qmodel, path = int8_files(ShuffleBlocks().eval(), x, tmp_path / "shuffle.onnx")
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    cut = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producer
           and producer[n.input[0]].op_type in ("Slice", "Split")]
    assert not cut, [n.name for n in cut]
    for backend, layout in (("onnxruntime", "u8s8"), ("openvino", "s8s8")):
        target = make_target(name=backend, backend=backend, threads=1)
        counts = BACKENDS.get(backend)().compile(layout_path(path, layout), target).int8_layers()
        assert counts["int8"] == counts["total"] == 6, (backend, counts)
    located = localize(path, qmodel, x[:1])
    assert located.aligned and located.first_divergence is None, located.to_json()


class GhostSlice(nn.Module):
    """ghostnet's module: ``cat([x1, cheap(x1)])[:, :c]``, then the block's residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12))
        self.primary = nn.Sequential(nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.stem(x)
        x1 = self.primary(shortcut)
        out = torch.cat([x1, self.cheap(x1)], dim=1)[:, :12]
        return self.head(out + shortcut)


PIECE_MODELS = {"ghostnet slice of a concat": (GhostSlice, False), "shufflenet chunk": (ShuffleBlocks, False),
                **{f"rexnet {k}": ((lambda k=k: PartialShortcut(PIECES[k])), True) for k in PIECES}}


@pytest.mark.parametrize("name", sorted(PIECE_MODELS))
def test_a_piece_is_requantized_only_where_its_source_feeds_two_joins(name, tmp_path):
    """Brevitas aligns an add's or concat's inputs onto one grid and, for an input it cannot follow,
    requantizes it. through_pieces follows a piece that keeps its source's grid (slice, chunk or split
    piece) back to that source when the source's pieces reach this join only: no QuantizeLinear reads a
    Slice or Split (ghostnet_100 had 16 such requantizers ORT ran in float: 1.08 -> 0.94x quantize_static
    at 224). rexnet's ``cat([y[:, :c] + shortcut, y[:, c:]])`` reaches an add and a concat from one ``y``,
    which cannot be on both grids: following it there, Brevitas re-aligned the two until it gave up and
    rexnet_100 fell back to layerwise mode (1.51x); its pieces keep their requantizers, in graph mode."""
    import onnx

    from tests.int8_files import int8_files

    make, requantized = PIECE_MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        model.train()(x)
    qmodel, path = int8_files(model.eval(), x, tmp_path / "pieces.onnx")
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    cut = [n.name for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producer
           and producer[n.input[0]].op_type in ("Slice", "Split")]
    assert bool(cut) == requantized, cut
    assert qmodel.quant_mode == "graph"


class GatheredBias(nn.Module):
    """LeViT's attention: ``q @ k^T + attention_biases[:, idxs]``, a bias gathered from a parameter by a
    tensor index, added to activations."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(3, 16, 1)
        self.biases = nn.Parameter(torch.randn(1, 6))
        self.register_buffer("idxs", torch.randint(0, 6, (16, 16)))
        self.head = nn.Linear(16 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, v = self.qkv(x).flatten(2).chunk(2, dim=1)  # (b, 8, 16) each
        attn = (q.transpose(1, 2) @ q) + self.biases[:, self.idxs]
        return self.head((v @ attn.softmax(-1)).flatten(1))


def test_a_bias_gathered_from_a_parameter_is_not_aligned_as_a_piece(tmp_path):
    """Indexing a parameter by a tensor is no piece of an activation: followed like a slice, the
    parameter took the add's quantizer and the exported file had fewer activation quantizers than the
    model called (levit_conv_128s: 180 for 191), so the export check could not compare them."""
    from edgekd.stages.export.int8_fidelity import localize
    from tests.int8_files import int8_files

    torch.manual_seed(0)
    x = torch.rand(8, 3, 4, 4)
    qmodel, path = int8_files(GatheredBias().eval(), x, tmp_path / "bias.onnx")
    where = localize(path, qmodel, x[:1])
    assert where.aligned, where.why
