"""Where each runtime needs quantizers, written down as data, and one pass that puts them there.

A runtime runs an op in INT8 only when the QDQ nodes around it form the pattern its fusion rules select.
ONNX Runtime's CPU rules (``onnxruntime/core/optimizer/qdq_transformer/selectors_actions/
qdq_selector_action_transformer.cc``, read for 1.2x) are of two kinds:

* *integer kernels*: ``DQ -> op -> Q`` (every float input a DequantizeLinear, the output a QuantizeLinear)
  becomes QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearConcat, ...;
* *grid-keeping ops*: ``DQ -> op -> Q`` with equal scale and zero point on both sides ("drop" rules):
  the pair is removed and the op runs on the integers (MaxPool, Reshape, Transpose, Slice, Resize, ...).

Brevitas writes a quantizer only where a value *changes* grid. After an op that keeps the grid of its
input (a MaxPool after a ReLU, a Concat of aligned branches, a Reshape before a classifier) the next
conv reads the op's float output directly: ``DQ -> MaxPool -> Conv``. OpenVINO's low-precision passes and
TensorRT's Q/DQ propagation move the DequantizeLinear past such ops themselves; ONNX Runtime does not,
so the conv stays in float (squeezenet1_0: 18 of 26 convs INT8, slower than its FP32 file). The rule for
ONNX Runtime's layout is therefore: after every grid-keeping op whose inputs all come from
DequantizeLinear nodes of one grid, and whose readers are not already QuantizeLinear nodes of it, a
``Q -> DQ`` pair on that grid. It is exact: the op's outputs are values of its input's grid (a max, a
copy, a nearest-neighbour resize of them), so quantizing them again changes nothing. No ONNX or ORT
library pass inserts requantizers into an existing QDQ graph (ORT's quantizer places them from float
data, before any graph exists), hence this pass, on ``onnxruntime.quantization``'s ``ONNXModel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayoutRules:
    """What one INT8 layout's runtimes need around each op."""

    runtimes: str
    # ops whose output values lie on their input's grid; a requantizer on that grid goes after them
    requantize_after: frozenset[str] = field(default_factory=frozenset)
    # ops a runtime runs as integer kernels when their float inputs come from DequantizeLinear nodes
    integer_ops: frozenset[str] = field(default_factory=frozenset)
    # broadcasting ops whose two dequantized inputs must have one rank (an Unsqueeze adds the leading axes)
    same_rank_inputs: frozenset[str] = field(default_factory=frozenset)
    # ops that only move elements: a per-tensor quantizer after them also quantizes what feeds them
    quantize_through: frozenset[str] = field(default_factory=frozenset)


# Resize keeps the grid only in nearest mode (linear modes average neighbours): checked per node below
ORT_GRID_KEEPING = frozenset({"Expand", "Flatten", "Gather", "GatherElements", "Reshape", "Slice", "Squeeze", "Tile",
                              "Transpose", "Unsqueeze", "MaxPool", "ReduceMax", "ReduceMin", "Resize", "Split",
                              "Concat"})  # Concat: QLinearConcat, exact when the inputs share one grid
ORT_INTEGER_OPS = frozenset({"Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool",
                             "LeakyRelu", "Sigmoid", "Softmax", "Where"})
CONV_LIKE = frozenset({"Conv", "MatMul", "Gemm"})  # the layers INT8 coverage counts
# Q(move(x)) == move(Q(x)) for a per-tensor grid: a quantizer after these also quantizes what feeds them
MOVES_ONLY = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"})

# OpenVINO's low-precision AddTransformation fails on two dequantized inputs of different rank: 2026.4
# refuses to compile ``DQ[1,49,49] + DQ[49,49]`` (timm's EfficientViT-M attention bias) with "index '0'
# out of range". Equal ranks compile; broadcasts within one rank (a squeeze-excite gate [1,C,1,1] times
# [1,C,H,W]) are left alone: an Expand to the full shape there cost ONNX Runtime 21 Transposes on tinynet_e.
OV_SAME_RANK = frozenset({"Add", "Sub"})

RULES = {
    "s8s8": LayoutRules("OpenVINO, TensorRT (both move DequantizeLinear past grid-keeping ops themselves)",
                        frozenset(), CONV_LIKE, OV_SAME_RANK),
    "u8s8": LayoutRules("ONNX Runtime CPU/CUDA", ORT_GRID_KEEPING, ORT_INTEGER_OPS, quantize_through=MOVES_ONLY),
    "dynamic": LayoutRules("ONNX Runtime CPU, transformers (activations quantized per call)", frozenset(),
                           frozenset({"MatMul"})),
}


def _grid(model: Any, dq: Any) -> tuple[float, int, int] | None:
    """(scale, zero point, zero point's ONNX type) of a per-tensor DequantizeLinear, or None."""
    from onnx import numpy_helper

    scale = model.get_initializer(dq.input[1])
    zero = model.get_initializer(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if scale is None or zero is None:
        return None
    s, z = numpy_helper.to_array(scale), numpy_helper.to_array(zero)
    if s.size != 1 or z.size != 1:
        return None
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), zero.data_type


def _keeps_grid(node: Any) -> bool:
    if node.op_type == "Resize":
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"nearest")
        return mode == b"nearest"
    return True


def data_inputs(node: Any) -> list[str]:
    """The inputs that carry activations (shapes, indices, pads and scales are not)."""
    if node.op_type in ("Concat", "Add", "Mul", "Where"):
        return [i for i in node.input if i]
    return [node.input[0]] if node.input else []


def insert_requantizers(onnx_model: Any, layout: str) -> int:
    """Put a ``Q -> DQ`` pair on the input's grid after every op ``RULES[layout]`` lists, wherever its
    inputs all come from DequantizeLinear nodes of one grid and some reader is not a QuantizeLinear;
    repeated until nothing changes (a MaxPool feeding a Reshape gets one after each). Returns how many."""
    from onnx import helper
    from onnxruntime.quantization.onnx_model import ONNXModel

    rules = RULES[layout]
    model = ONNXModel(onnx_model)
    inits = {i.name for i in onnx_model.graph.initializer}
    added = 0
    changed = True
    while changed:
        changed = False
        producer = {o: n for n in model.nodes() for o in n.output}
        readers = model.input_name_to_nodes()
        for node in list(model.nodes()):
            if node.op_type not in rules.requantize_after or not _keeps_grid(node):
                continue
            sources = [producer.get(i) for i in data_inputs(node) if i not in inits]
            if not sources or any(s is None or s.op_type != "DequantizeLinear" for s in sources):
                continue
            grids = {_grid(model, s) for s in sources}
            if len(grids) != 1 or None in grids:
                continue
            dq = sources[0]
            for out in node.output:
                after = readers.get(out, [])
                if (not after or all(r.op_type == "QuantizeLinear" for r in after)
                        or any(o.name == out for o in onnx_model.graph.output)):
                    continue
                q_out, dq_out = f"{out}_edgekd_q", f"{out}_edgekd_dq"
                zero = dq.input[2]
                # named by the output, not the node: a Split has several (edgenext's), and names must be unique
                model.add_node(helper.make_node("QuantizeLinear", [out, dq.input[1], zero], [q_out],
                                                name=f"{out}_requant_q"))
                model.add_node(helper.make_node("DequantizeLinear", [q_out, dq.input[1], zero], [dq_out],
                                                name=f"{out}_requant_dq"))
                for reader in after:
                    for k, name in enumerate(reader.input):
                        if name == out:
                            reader.input[k] = dq_out
                added += 1
                changed = True
        if changed:
            model.topological_sort()
    return added


def quantize_before_moves(onnx_model: Any, layout: str) -> int:
    """Copy each per-tensor ``Q -> DQ`` that a chain of ``RULES[layout].quantize_through`` ops (Flatten,
    Reshape, ...) separates from an integer op to right after that op: ``GAP -> Flatten -> Q -> DQ -> Gemm``
    becomes ``GAP -> Q -> DQ -> Flatten -> Q -> DQ -> Gemm``. Brevitas quantizes a classifier's input after
    its flatten; ONNX Runtime runs the pool as QLinearGlobalAveragePool only when a QuantizeLinear reads it
    (regnetx_002, tinynet_e, tf_efficientnet_lite0: the pool float, 1.1-1.2x quantize_static's latency).
    Exact: a per-tensor quantizer commutes with ops that only move elements, and the second ``Q`` re-reads
    values already on its grid. Only chains whose every link has one reader, so no float reader changes.
    Returns how many pairs were added."""
    from onnx import helper

    rules = RULES[layout]
    if not rules.quantize_through:
        return 0
    graph = onnx_model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    scalar = {i.name for i in graph.initializer if len(i.dims) == 0 or list(i.dims) == [1]}
    added: list[tuple[Any, list[Any]]] = []
    for quant in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[1] in scalar]:
        first, source = None, producer.get(quant.input[0])
        while (source is not None and source.op_type in rules.quantize_through
               and len(readers.get(source.output[0], [])) == 1 and source.output[0] not in outputs):
            first, source = source, producer.get(source.input[0])
        if first is None or source is None or source.op_type not in rules.integer_ops:
            continue
        if any(r.op_type == "QuantizeLinear" for r in readers.get(first.input[0], [])):
            continue
        name = f"{first.input[0]}_edgekd_q_{quant.name}"
        added.append((first, [helper.make_node("QuantizeLinear", [first.input[0], *quant.input[1:]], [f"{name}_int"],
                                               name=f"{name}_int"),
                              helper.make_node("DequantizeLinear", [f"{name}_int", *quant.input[1:]], [name], name=name)]))
        first.input[0] = name
    for node, inserted in added:  # right before their reader: the graph stays topologically sorted
        at = list(graph.node).index(node)
        for offset, new in enumerate(inserted):
            graph.node.insert(at + offset, new)
    return len(added)


def fused_gelus(onnx_model: Any) -> int:
    """Fuse each exported GELU (``Div -> Erf -> Add -> Mul -> Mul``, five float ops) into ONNX Runtime's
    one ``com.microsoft.Gelu`` op, with ORT's own pattern matcher (``onnxruntime.transformers``'
    ``FusionGelu``). The session's optimizer would do this itself, but on a QDQ file it first gives each
    reader of a DequantizeLinear its own copy, and the pattern (``x`` read by both the Div and the Mul) no
    longer matches: 17 GELUs of FastViT-T8 ran as 85 float ops. For the ONNX Runtime layout only (a
    contrib op); the same formula, so the file's values move by float rounding at most. Returns how many."""
    import logging

    from onnxruntime.transformers.fusion_gelu import FusionGelu
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx_model)
    before = len(model.get_nodes_by_op_type("Erf"))
    level = logging.getLogger("onnxruntime.transformers").level
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    try:
        FusionGelu(model).apply()
    finally:
        logging.getLogger("onnxruntime.transformers").setLevel(level)
    fused = before - len(model.get_nodes_by_op_type("Erf"))
    if fused:
        model.topological_sort()
        if not any(o.domain == "com.microsoft" for o in onnx_model.opset_import):
            from onnx import helper

            onnx_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused


def align_dequantized_ranks(onnx_model: Any, layout: str) -> int:
    """Give the lower-rank input of every ``RULES[layout].same_rank_inputs`` op whose two inputs come from
    per-tensor DequantizeLinear nodes the leading axes it lacks: ``Q -> Unsqueeze -> DQ``, exact (broadcasting
    adds those 1s anyway; ranks from ONNX shape inference). The Unsqueeze goes on the integers, so the op still
    reads DequantizeLinear nodes. Returns how many inputs were aligned."""
    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    ops = RULES[layout].same_rank_inputs
    graph = onnx_model.graph
    inferred = shape_inference.infer_shapes(onnx_model).graph
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.value_info, *inferred.input, *inferred.output)
            if v.type.tensor_type.HasField("shape")}
    producer = {o: n for n in graph.node for o in n.output}
    scalar = {i.name for i in graph.initializer if len(i.dims) == 0 or list(i.dims) == [1]}
    added: list[tuple[Any, list[Any]]] = []
    for node in graph.node:
        sources = [producer.get(i) for i in node.input]
        if (node.op_type not in ops or len(node.input) != 2
                or any(s is None or s.op_type != "DequantizeLinear" or s.input[1] not in scalar for s in sources)):
            continue
        ranks = [rank.get(i) for i in node.input]
        if None in ranks or ranks[0] == ranks[1]:
            continue
        low = ranks.index(min(ranks))
        dq = sources[low]
        out = f"{node.input[low]}_edgekd_rank{max(ranks)}_{node.name}"
        axes = numpy_helper.from_array(np.arange(abs(ranks[0] - ranks[1]), dtype=np.int64), f"{out}_axes")
        graph.initializer.append(axes)
        added.append((node, [helper.make_node("Unsqueeze", [dq.input[0], axes.name], [f"{out}_int"], name=f"{out}_int"),
                             helper.make_node("DequantizeLinear", [f"{out}_int", *dq.input[1:]], [out], name=out)]))
        node.input[low] = out
    for node, inserted in added:  # right before their reader: the graph stays topologically sorted
        at = list(graph.node).index(node)
        for offset, new in enumerate(inserted):
            graph.node.insert(at + offset, new)
    return len(added)


def placement_problems(onnx_model: Any, layout: str) -> dict[str, str]:
    """Node name -> which of the layout's rules it breaks, for every conv/matmul/gemm (the layers INT8
    coverage counts): a float input that is not a DequantizeLinear (and the op it comes from), or, for
    layouts whose integer kernels need it, an output that no QuantizeLinear reads."""
    rules = RULES[layout]
    graph = onnx_model.graph
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    problems = {}
    for node in graph.node:
        if node.op_type not in CONV_LIKE or node.op_type not in rules.integer_ops:
            continue
        for name in node.input[:2]:
            source = producer.get(name)
            if name in inits or source is None and name not in {i.name for i in graph.input}:
                continue
            if source is None or source.op_type != "DequantizeLinear":
                problems[node.name] = (f"input {name!r} comes from {source.op_type if source else 'the graph input'} "
                                       f"in float: {layout} needs a DequantizeLinear there")
                break
        if node.name not in problems and layout == "u8s8" and node.op_type == "Conv":
            outs = readers.get(node.output[0], [])
            follow = [r for r in outs if r.op_type in ("Relu", "Clip")]
            if not any(r.op_type == "QuantizeLinear" for r in outs + [x for f in follow for x in readers.get(f.output[0], [])]):
                problems[node.name] = "its output goes to no QuantizeLinear: ONNX Runtime's QLinearConv needs one"
    return problems

