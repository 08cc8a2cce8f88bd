"""Which QDQ patterns each runtime runs in INT8, written down as data, and how an INT8 file's layouts are
named: the contract between the export stage, which places quantizers by these rules
(``stages/export/int8_placement.py``, whose docstring reads them off ONNX Runtime's optimizer), and the
backends, which explain a layer left in float by the same rules. Nothing here rewrites a graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LayoutRules:
    """What one INT8 layout's runtimes need around each op."""

    runtimes: str
    # ops whose output values lie on their input's grid; a requantizer on that grid goes after them
    requantize_after: frozenset[str] = field(default_factory=frozenset)
    # ops a runtime runs as integer kernels when their float inputs come from DequantizeLinear nodes
    integer_ops: frozenset[str] = field(default_factory=frozenset)
    # elementwise ops that cannot read a dequantized *constant* (a quantizer on a value computed from
    # parameters only) unless it is a scalar or per-channel: the constant goes in as its grid's float values
    float_constant_operands: frozenset[str] = field(default_factory=frozenset)
    # ops that only move elements: a per-tensor quantizer after them also quantizes what feeds them
    quantize_through: frozenset[str] = field(default_factory=frozenset)
    # clamps the runtime folds into the QuantizeLinear after an integer op only when that quantizer's range
    # lies inside the clamp's; elsewhere a quantizer on the same grid goes before them
    folded_clamps: frozenset[str] = field(default_factory=frozenset)
    # the runtime merges ``Q1 -> DQ1 -> Q2 -> DQ2`` into one DQ that all of DQ2's readers then share, and
    # fuses no integer op whose DequantizeLinear has another reader: each reader gets its own chain
    one_reader_per_requantizer: bool = False
    # integer ops whose runtime kernel also needs a QuantizeLinear reading their output (ORT's QLinearConv:
    # DQ -> Conv -> Q; its QGemm and MatMulIntegerToFloat take a float output)
    quantized_outputs: frozenset[str] = field(default_factory=frozenset)
    # elementwise integer ops the runtime runs in INT8 only when *every* input is dequantized, a scalar
    # constant too (ORT's QLinearMul/QLinearAdd): such a constant goes in through a DequantizeLinear that
    # holds it exactly (``dequantized_scalar_operands``)
    dequantized_scalars: frozenset[str] = field(default_factory=frozenset)
    # conv shapes (``CONV_SHAPES``) the runtime has an INT8 kernel for only in a fallback slower than its
    # float one: their weights go in as the float values of their INT8 grid (``float_weight_convs``)
    float_convs: frozenset[str] = field(default_factory=frozenset)


# Resize keeps the grid only in nearest mode (linear modes average neighbours): checked per node below
ORT_GRID_KEEPING = frozenset({"Expand", "Flatten", "Gather", "GatherElements", "Reshape", "Slice", "Squeeze", "Tile",
                              "Transpose", "Unsqueeze", "MaxPool", "ReduceMax", "ReduceMin", "Resize", "Split",
                              "Concat"})  # Concat: QLinearConcat, exact when the inputs share one grid


ORT_INTEGER_OPS = frozenset({"Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool",
                             "LeakyRelu", "Sigmoid", "Softmax", "Where"})


CONV_LIKE = frozenset({"Conv", "MatMul", "Gemm"})  # the layers INT8 coverage counts


# Q(move(x)) == move(Q(x)) for a per-tensor grid: a quantizer after these also quantizes what feeds them
MOVES_ONLY = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"})


# OpenVINO 2026.4's low-precision passes fail to compile an Add, Sub or Mul one of whose inputs is a
# dequantized constant ("index '0' out of range"): timm's EfficientViT-M and torchvision's Swin add
# attention biases gathered from a parameter table. Checked on two-input graphs: any constant shape fails
# (equal shapes too) except a scalar and a per-channel [1,C,1,1], and those fail in a model (HGNetV2's
# affine ``relu(x) * s + b``), so every dequantized constant goes in as float; two dequantized
# *activations* of any broadcastable shapes compile (the rank rule this replaced had misread EfficientViT-M's).
OV_CONSTANT_OPERANDS = frozenset({"Add", "Sub", "Mul"})


FLOATED_CONSTANT = "_edgekd_float"  # the suffix of such a constant's initializer


# Every node a layout adds carries this in its name: the file's other QuantizeLinear nodes are the model's
# own quantizers, one per call, which the export check's op-by-op comparison pairs with the model's
# (``int8_fidelity.localize``); an added requantizer re-reads values already on a grid and has no partner.
ADDED_MARK = "_edgekd_"


def added_by_layout(node: Any) -> bool:
    """Whether a layout added ``node`` (a requantizer, a moved quantizer, a private DequantizeLinear)."""
    return ADDED_MARK in node.name


# A conv's shape as its kernels see it: (groups, input channels per group, output channels per group).
# oneDNN (OpenVINO's CPU kernels) has INT8 jit kernels for dense convs and for depthwise ones (1 in, 1 out
# per group); a grouped conv with a channel multiplier (1 in, k > 1 out per group: FastViT's downsampling
# convs, the only ones among the 70 zoo models) runs in its ``jit_gemm_I8`` fallback: OpenVINO 2026.4's
# profile of fastvit_t8 @256 on AVX2 put 8 such convs at 10.8 of 20.1 ms, 4x their float time.
CONV_SHAPES = {
    "channel_multiplier": lambda groups, per_in, per_out: groups > 1 and per_in == 1 and per_out > 1,
}


RULES = {
    "s8s8": LayoutRules("OpenVINO, TensorRT (both move DequantizeLinear past grid-keeping ops themselves)",
                        frozenset(), CONV_LIKE, OV_CONSTANT_OPERANDS),
    "s8s8-onednn": LayoutRules("OpenVINO CPU (oneDNN kernels)", frozenset(), CONV_LIKE, OV_CONSTANT_OPERANDS,
                               float_convs=frozenset({"channel_multiplier"})),
    "u8s8": LayoutRules("ONNX Runtime CPU/CUDA", ORT_GRID_KEEPING, ORT_INTEGER_OPS, quantize_through=MOVES_ONLY,
                        folded_clamps=frozenset({"Relu", "Clip"}), one_reader_per_requantizer=True,
                        quantized_outputs=frozenset({"Conv"}), dequantized_scalars=frozenset({"Add", "Mul"})),
    "dynamic": LayoutRules("ONNX Runtime CPU, transformers (activations quantized per call)", frozenset(),
                           frozenset({"MatMul"})),
}


def links(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(tensor -> the node writing it, tensor -> the nodes reading it)."""
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return producer, readers


# an integer type's (lowest, highest) value, by ONNX type code
INT_RANGES = {2: (0, 255), 3: (-128, 127)}


def quantizer_range(graph: Any, quant: Any) -> tuple[float, float] | None:
    """The real values a per-tensor QuantizeLinear can write, (qmin - zp) * s to (qmax - zp) * s, as ONNX
    Runtime computes them (float32); None when its scale or zero point is not a one-value initializer."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    if len(quant.input) < 3 or quant.input[1] not in inits or quant.input[2] not in inits:
        return None
    scale, zero = numpy_helper.to_array(inits[quant.input[1]]), inits[quant.input[2]]
    if scale.size != 1 or zero.data_type not in INT_RANGES or numpy_helper.to_array(zero).size != 1:
        return None
    s, z = np.float32(scale.reshape(-1)[0]), int(numpy_helper.to_array(zero).reshape(-1)[0])
    low, high = INT_RANGES[zero.data_type]
    return float(s * np.float32(low - z)), float(s * np.float32(high - z))


def clamp_bounds(graph: Any, clamp: Any) -> tuple[float, float] | None:
    """(min, max) of a Relu (0, inf) or a Clip whose bounds are initializers (absent: unbounded); else None."""
    from onnx import numpy_helper

    if clamp.op_type == "Relu":
        return 0.0, float("inf")
    inits = {i.name: i for i in graph.initializer}
    bounds = []
    for k, default in ((1, float("-inf")), (2, float("inf"))):
        name = clamp.input[k] if len(clamp.input) > k else ""
        if name and name not in inits:
            return None
        bounds.append(float(numpy_helper.to_array(inits[name]).reshape(-1)[0]) if name else default)
    return bounds[0], bounds[1]


def clamp_folds(graph: Any, clamp: Any, quant: Any) -> bool:
    """Whether ONNX Runtime removes ``clamp`` before ``quant`` (``ReluQuantFusion``, ``ClipQuantFusion``:
    the quantizer's range lies within the clamp's, to float32 epsilon), which is what lets the integer op
    before the clamp read as ``DQ -> op -> Q``."""
    import numpy as np

    span, bounds = quantizer_range(graph, quant), clamp_bounds(graph, clamp)
    if span is None or bounds is None:
        return False
    eps = float(np.finfo(np.float32).eps)
    if clamp.op_type == "Relu":  # ORT's rule: the zero point is the type's lowest value
        return span[0] == 0.0
    return bounds[0] - span[0] <= eps and span[1] - bounds[1] <= eps


def shared_requantizer(producer: dict[str, Any], readers: dict[str, list[Any]], name: str) -> bool:
    """Whether tensor ``name`` is the end of a requantizer chain ``DQ -> Q -> DQ`` that other ops read too
    (see ``private_requantizer_chains``)."""
    dq2 = producer.get(name)
    q2 = producer.get(dq2.input[0]) if dq2 is not None and dq2.op_type == "DequantizeLinear" else None
    dq1 = producer.get(q2.input[0]) if q2 is not None and q2.op_type == "QuantizeLinear" else None
    return dq1 is not None and dq1.op_type == "DequantizeLinear" and len(readers.get(name, [])) > 1


def unfolded_clamp(graph: Any, readers: dict[str, list[Any]], node: Any, layout: str = "u8s8") -> Any | None:
    """The clamp (``RULES[layout].folded_clamps``) between ``node`` and its QuantizeLinear that the
    layout's runtime cannot fold, if any."""
    after = readers.get(node.output[0], [])
    if len(after) != 1 or after[0].op_type not in RULES[layout].folded_clamps:
        return None
    quants = [r for r in readers.get(after[0].output[0], []) if r.op_type == "QuantizeLinear"]
    return after[0] if quants and not clamp_folds(graph, after[0], quants[0]) else None


# layout -> what it is; the s8s8 file is the variant's main file (models/<variant>.onnx)
LAYOUTS = {"s8s8": "symmetric INT8 activations and weights (TensorRT, OpenVINO)",
           "u8s8": "UINT8 activations (zero point 128), INT8 weights (ONNX Runtime CPU)",
           "s8s8-onednn": "s8s8, with the convs OpenVINO's CPU kernels (oneDNN) have no fast INT8 kernel for "
                          "in float (written only for models that have such convs)"}


DEFAULT_LAYOUT = "s8s8"


ONEDNN_LAYOUT = "s8s8-onednn"


def layout_path(path: Path, layout: str) -> Path:
    """Where the ``layout`` file of the INT8 file ``path`` lives: beside it, ``<stem>.<layout>.onnx``."""
    return path if layout == DEFAULT_LAYOUT else path.with_name(f"{path.stem}.{layout}{path.suffix}")
