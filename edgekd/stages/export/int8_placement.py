"""Where each runtime needs quantizers, and the passes that put them there (the rules themselves are
data in ``artifacts.qdq_rules``, which the backends read too).

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

Two more of ORT's rules decide whether a conv is fused, both read off its optimizer: a ``Relu``/``Clip``
between the conv and its quantizer is removed only when the quantizer's range lies within the clamp's
(``ReluQuantFusion``, ``ClipQuantFusion``), and no op is fused whose DequantizeLinear has another reader,
which ORT's ``DoubleQDQPairsRemover`` creates when it merges a shared requantizer chain. For the first a
quantizer on the same grid goes before the clamp, for the second each reader gets its own chain
(``quantize_before_clamps``, ``private_requantizer_chains``; both exact).
"""

from __future__ import annotations

from typing import Any

from ...artifacts.qdq_rules import (ADDED_MARK, CONV_LIKE, CONV_SHAPES, FLOATED_CONSTANT, INT_RANGES, RULES, clamp_folds,
                                   links, quantizer_range, shared_requantizer, unfolded_clamp)


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


def sort_keeping_order(graph: Any) -> None:
    """Sort ``graph``'s nodes topologically, keeping the relative order of nodes that were already in order.

    A layout appends what it adds (a requantizer, ORT's fused Gelu) and sorts; a plain topological sort
    then reorders the model's own nodes too, and the export check pairs the file's quantizers with the
    model's by order (``int8_fidelity.localize``: resnet34's u8s8 file paired an add's quantizer with a
    ReLU's). Kahn's algorithm, always taking the ready node of lowest rank, where a node's rank is the
    lowest position of itself and everything that reads it, directly or not: an appended node ranks with
    its first reader, and of two nodes in order, some ancestor of the first always outranks the second."""
    import heapq

    nodes = list(graph.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    needs = [{producer[i] for i in n.input if i in producer} for n in nodes]
    readers: list[list[int]] = [[] for _ in nodes]
    for k, sources in enumerate(needs):
        for source in sources:
            readers[source].append(k)
    rank = list(range(len(nodes)))
    unread = [len(r) for r in readers]  # reverse Kahn: a node's rank is final once its readers' are
    todo = [k for k, count in enumerate(unread) if count == 0]
    while todo:
        k = todo.pop()
        for source in needs[k]:
            rank[source] = min(rank[source], rank[k])
            unread[source] -= 1
            if unread[source] == 0:
                todo.append(source)
    waiting = [len(sources) for sources in needs]
    ready = [(rank[k], k) for k, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(k)
        for reader in readers[k]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, (rank[reader], reader))
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle: it cannot be sorted")
    copies = []
    for k in order:  # copied before the field is cleared: protobuf may detach the messages it removes
        copies.append(type(nodes[k])())
        copies[-1].CopyFrom(nodes[k])
    del graph.node[:]
    graph.node.extend(copies)


def insert_before(graph: Any, added: list[tuple[Any, list[Any]]]) -> None:
    """Put each list of new nodes right before the node that reads them: the graph stays sorted."""
    for node, inserted in added:
        at = list(graph.node).index(node)
        for offset, new in enumerate(inserted):
            graph.node.insert(at + offset, new)


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
                                                name=f"{out}{ADDED_MARK}requant_q"))
                model.add_node(helper.make_node("DequantizeLinear", [q_out, dq.input[1], zero], [dq_out],
                                                name=f"{out}{ADDED_MARK}requant_dq"))
                for reader in after:
                    for k, name in enumerate(reader.input):
                        if name == out:
                            reader.input[k] = dq_out
                added += 1
                changed = True
        if changed:
            sort_keeping_order(onnx_model.graph)
    return added


def quantize_before_moves(onnx_model: Any, layout: str) -> int:
    """Copy each per-tensor ``Q -> DQ`` that a chain of ``RULES[layout].quantize_through`` ops (Flatten,
    Reshape, ...) separates from an integer op to right after that op: ``GAP -> Flatten -> Q -> DQ -> Gemm``
    becomes ``GAP -> Q -> DQ -> Flatten -> Q -> DQ -> Gemm``. Brevitas quantizes a classifier's input after
    its flatten; ONNX Runtime runs the pool as QLinearGlobalAveragePool only when a QuantizeLinear reads it
    (regnetx_002, tinynet_e, tf_efficientnet_lite0: the pool float, 1.1-1.2x quantize_static's latency).
    Exact: a per-tensor quantizer commutes with ops that only move elements, and the second ``Q`` re-reads
    values already on its grid. Only chains whose every link has one reader, so no float reader changes,
    and no global pool whose grids ORT's kernel refuses (``global_pool_runs``): that pool stays float.
    Returns how many pairs were added."""
    from onnx import helper

    rules = RULES[layout]
    if not rules.quantize_through:
        return 0
    graph = onnx_model.graph
    producer, readers = links(graph)
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
        if source.op_type == "GlobalAveragePool" and not global_pool_runs(onnx_model, source, quant):
            continue
        name = f"{first.input[0]}{ADDED_MARK}q_{quant.name}"
        added.append((first, [helper.make_node("QuantizeLinear", [first.input[0], *quant.input[1:]], [f"{name}_int"],
                                               name=f"{name}_int"),
                              helper.make_node("DequantizeLinear", [f"{name}_int", *quant.input[1:]], [name], name=name)]))
        first.input[0] = name
    insert_before(graph, added)
    return len(added)


# ONNX Runtime's QLinearGlobalAveragePool (MLAS ``CheckQLinearGlobalAveragePoolScaleAndSize``) refuses to
# run, at inference time, unless input scale / (output scale x pixels) lies in this range: "parameter out of
# computation range" (a random-init mobilenet_v2 whose pooled features are all zero, so the quantizer after
# them calibrated to a scale of 1e-10)
ORT_GLOBAL_POOL_SCALES = (2.0 ** -32, 256.0)


def global_pool_runs(onnx_model: Any, pool: Any, quant: Any) -> bool:
    """Whether ONNX Runtime can run ``DQ -> pool -> quant`` as QLinearGlobalAveragePool
    (``ORT_GLOBAL_POOL_SCALES``); False where the pool's input grid, output grid or pixel count is unknown."""
    import numpy as np
    import onnx

    producer, _ = links(onnx_model.graph)
    dq = producer.get(pool.input[0])
    inputs = quantizer_range(onnx_model.graph, dq) if getattr(dq, "op_type", "") == "DequantizeLinear" else None
    output = quantizer_range(onnx_model.graph, quant)
    if inputs is None or output is None:
        return False
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(onnx_model).graph.value_info}
    shapes.update({v.name: v for v in onnx_model.graph.input})
    known = shapes.get(pool.input[0])
    dims = [d.dim_value for d in known.type.tensor_type.shape.dim] if known is not None else []
    if len(dims) < 3 or any(d <= 0 for d in dims[2:]):
        return False
    x_scale, y_scale = np.float32(_scale(onnx_model, dq)), np.float32(_scale(onnx_model, quant))
    ratio = float(x_scale / (y_scale * np.float32(np.prod(dims[2:]))))
    return ORT_GLOBAL_POOL_SCALES[0] <= ratio < ORT_GLOBAL_POOL_SCALES[1]


def _scale(onnx_model: Any, node: Any) -> float:
    from onnx import numpy_helper

    scale = next(i for i in onnx_model.graph.initializer if i.name == node.input[1])
    return float(numpy_helper.to_array(scale).reshape(-1)[0])


def quantize_before_clamps(onnx_model: Any, layout: str) -> int:
    """Put a ``Q -> DQ`` on the following quantizer's grid between an integer op and each Relu/Clip
    (``RULES[layout].folded_clamps``) the runtime cannot fold into that quantizer: ``Conv -> Clip -> Q``
    becomes ``Conv -> Q -> DQ -> Clip -> Q``, so the conv is ``DQ -> Conv -> Q`` whatever the clamp.
    ONNX Runtime folds a clamp only when the quantizer's range lies inside it, which a signed grid
    (Brevitas' ``QuantHardTanh``, an aligned residual) never does: the conv before ran in float.
    Exact: quantizing is monotone, so ``Q(clamp(x)) == Q(clamp(DQ(Q(x))))`` (both are ``x``'s integer
    clamped to the bounds' integers). Returns how many pairs were added."""
    from onnx import helper

    rules = RULES[layout]
    graph = onnx_model.graph
    producer, readers = links(graph)
    added: list[tuple[Any, list[Any]]] = []
    for clamp in graph.node:
        if clamp.op_type not in rules.folded_clamps:
            continue
        source, after = producer.get(clamp.input[0]), readers.get(clamp.output[0], [])
        if (source is None or source.op_type not in rules.integer_ops or len(readers[clamp.input[0]]) != 1
                or not after or any(r.op_type != "QuantizeLinear" or r.input[1:3] != after[0].input[1:3]
                                    for r in after)):
            continue
        quant = after[0]
        if quantizer_range(graph, quant) is None or clamp_folds(graph, clamp, quant):
            continue
        name = f"{clamp.input[0]}{ADDED_MARK}q_{clamp.name}"
        added.append((clamp, [helper.make_node("QuantizeLinear", [clamp.input[0], *quant.input[1:3]], [f"{name}_int"],
                                               name=f"{name}_int"),
                              helper.make_node("DequantizeLinear", [f"{name}_int", *quant.input[1:3]], [name],
                                               name=name)]))
        clamp.input[0] = name
    insert_before(graph, added)
    return len(added)


def private_requantizer_chains(onnx_model: Any, layout: str) -> int:
    """Give each reader of a requantized tensor (``Q1 -> DQ1 -> Q2 -> DQ2`` with several readers of DQ2:
    a ReLU6's output requantized onto a residual's grid) its own copy of ``DQ1 -> Q2 -> DQ2``, when
    ``RULES[layout].one_reader_per_requantizer``. ONNX Runtime's ``DoubleQDQPairsRemover`` merges such a
    chain into one DequantizeLinear after its ``EnsureUniqueDQForNodeUnit`` has run, so the merged DQ stays
    shared, and its QDQ selectors fuse no op whose DQ has another reader: the conv reading the residual
    ran in float. Copies change no value. Returns how many readers got a chain of their own."""
    from onnx import NodeProto

    if not RULES[layout].one_reader_per_requantizer:
        return 0
    graph = onnx_model.graph
    producer, readers = links(graph)
    outputs = {o.name for o in graph.output}
    added: list[tuple[Any, list[Any]]] = []
    for dq2 in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q2 = producer.get(dq2.input[0])
        dq1 = producer.get(q2.input[0]) if q2 is not None and q2.op_type == "QuantizeLinear" else None
        takers = readers.get(dq2.output[0], [])
        if dq1 is None or dq1.op_type != "DequantizeLinear" or len(takers) < 2 or dq2.output[0] in outputs:
            continue
        for k, reader in enumerate(takers[1:], 1):
            copies = []
            source = dq1.input[0]
            for node in (dq1, q2, dq2):
                copy = NodeProto()
                copy.CopyFrom(node)  # attributes (axis, saturate) too
                copy.input[0], copy.output[0] = source, f"{node.output[0]}_edgekd_reader{k}"
                copy.name = source = copy.output[0]
                copies.append(copy)
            for j, name in enumerate(reader.input):
                if name == dq2.output[0]:
                    reader.input[j] = source
            added.append((reader, copies))
    insert_before(graph, added)
    return len(added)


# the constant that makes an elementwise op a no-op, which ORT's optimizer removes (timm's MobileOne adds
# ``0`` for a missing identity branch: dequantized, those 21 adds ran as QLinearAdd, 1.08x quantize_static)
NO_OP_OPERANDS = {"Add": 0.0, "Mul": 1.0}


def dequantized_scalar_operands(onnx_model: Any, layout: str) -> int:
    """Each scalar float constant read by a ``RULES[layout].dequantized_scalars`` op whose other inputs are
    DequantizeLinear outputs and whose output only QuantizeLinear nodes read goes in through a
    DequantizeLinear of its own: ``DQ(x) * 0.93 -> Q`` becomes ``DQ(x) * DQ(1; scale 0.93) -> Q``, which
    ONNX Runtime runs as QLinearMul. Brevitas quantizes activations, not the constants an activation is
    scaled or shifted by (HGNetV2's learnable affine ``x * s + b`` after each ReLU: 31 Mul and 31 Add in
    float between a DQ and a Q, where ``quantize_static`` runs QLinearMul and QLinearAdd). Exact: the
    integer is 1 (0 for a negative constant, zero point 1; 0 for zero) and the scale the constant's magnitude, so the
    DequantizeLinear gives back the constant's float32 value bit for bit. The zero point has the type of
    the op's other DequantizeLinear (ORT's selectors want one integer type per op). A no-op constant
    (``NO_OP_OPERANDS``) is left as it is: ORT removes the op. Returns how many."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    ops = RULES[layout].dequantized_scalars
    if not ops:
        return 0
    graph = onnx_model.graph
    producer, readers = links(graph)
    inits = {i.name: i for i in graph.initializer}
    added: list[tuple[Any, list[Any]]] = []
    for node in [n for n in graph.node if n.op_type in ops]:
        scalars = [k for k, i in enumerate(node.input) if i in inits and inits[i].data_type == TensorProto.FLOAT
                   and int(np.prod(inits[i].dims)) == 1]
        others = [producer.get(i) for k, i in enumerate(node.input) if k not in scalars]
        after = readers.get(node.output[0], [])
        if (len(scalars) != 1 or not others or any(getattr(o, "op_type", "") != "DequantizeLinear" for o in others)
                or not after or any(r.op_type != "QuantizeLinear" for r in after)):
            continue
        zero_type = inits.get(others[0].input[2]) if len(others[0].input) > 2 else None
        if zero_type is None or zero_type.data_type not in INT_RANGES:
            continue
        k = scalars[0]
        constant = numpy_helper.to_array(inits[node.input[k]])
        value = np.float32(constant.reshape(-1)[0])
        if value == NO_OP_OPERANDS.get(node.op_type):  # ``x + 0``, ``x * 1``: ORT removes the op itself
            continue
        dtype = np.uint8 if zero_type.data_type == TensorProto.UINT8 else np.int8
        integer, zero = (1, 0) if value > 0 else (0, 1) if value < 0 else (0, 0)
        scale = np.float32(abs(value)) if value != 0 else np.float32(1.0)
        name = f"{node.input[k]}{ADDED_MARK}dq_{node.name}"
        for suffix, array in (("int", np.array(integer, dtype).reshape(constant.shape)),
                              ("scale", np.array(scale, np.float32)), ("zero", np.array(zero, dtype))):
            graph.initializer.append(numpy_helper.from_array(array, f"{name}_{suffix}"))
        added.append((node, [helper.make_node("DequantizeLinear", [f"{name}_int", f"{name}_scale", f"{name}_zero"],
                                              [name], name=name)]))
        node.input[k] = name
    insert_before(graph, added)
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
        sort_keeping_order(onnx_model.graph)
        if not any(o.domain == "com.microsoft" for o in onnx_model.opset_import):
            from onnx import helper

            onnx_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused


def constant_tensors(graph: Any) -> set[str]:
    """Tensors computed from initializers and Constant nodes only (a parameter table gathered by fixed
    indices, reshaped, quantized): the same in every call."""
    known = {i.name for i in graph.initializer} | {""}
    for node in graph.node:  # nodes are in topological order
        if node.op_type not in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike") and \
                all(i in known for i in node.input):
            known.update(node.output)
    return known - {""}


def float_dequantized_constants(onnx_model: Any, layout: str) -> int:
    """Each input of a ``RULES[layout].float_constant_operands`` op that is a DequantizeLinear of a
    constant (a per-tensor activation quantizer on a parameter-derived value) becomes a float initializer
    holding that DequantizeLinear's output: the same values, as ONNX Runtime computes them from the file
    (optimisations off, any input: the value depends on none). Scalars and per-channel constants too:
    on two-input test graphs they compiled, but HGNetV2's ``relu(x) * s + b`` (``b`` a one-element
    parameter Brevitas quantizes onto the add's grid) failed as the attention biases had, whatever
    the shape of ``b``. Returns how many inputs were replaced."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    ops = RULES[layout].float_constant_operands
    graph = onnx_model.graph
    constant = constant_tensors(graph)
    producer, _ = links(graph)
    inits = {i.name for i in graph.initializer}

    def quantized_here(name: str) -> bool:  # DQ <- (Clip <-) QuantizeLinear: an activation quantizer, not a
        dq = producer.get(name)                # weight's or bias' DequantizeLinear of integer initializers
        if getattr(dq, "op_type", "") != "DequantizeLinear":
            return False
        source = producer.get(dq.input[0])
        if getattr(source, "op_type", "") == "Clip":
            source = producer.get(source.input[0])
        return getattr(source, "op_type", "") == "QuantizeLinear"

    wanted = {i for n in graph.node if n.op_type in ops for i in n.input if i in constant and quantized_here(i)}
    if not wanted:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(onnx_model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in sorted(wanted))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
                             dtype=np.int64 if "int64" in i.type else np.float32) for i in session.get_inputs()}
    values = dict(zip(sorted(wanted), session.run(sorted(wanted), feed)))
    replaced = 0
    for node in [n for n in graph.node if n.op_type in ops]:
        for k, name in enumerate(node.input):
            if name in values:
                folded = f"{name}{FLOATED_CONSTANT}"
                if folded not in inits:
                    graph.initializer.append(numpy_helper.from_array(values[name], folded))
                    inits.add(folded)
                node.input[k] = folded
                replaced += 1
    # The quantizer chains stay, read by nothing: runtimes drop them, and the export check still finds one
    # QuantizeLinear per quantizer call of the model (dropping the chains made it lose count on LeViT)
    return replaced


def float_weight_convs(onnx_model: Any, layout: str, write: bool = True) -> list[str]:
    """The convs whose shape ``RULES[layout].float_convs`` names, and (``write``) each one's weight
    ``DequantizeLinear`` replaced by its output as a float initializer: ``(q - zero point) * scale`` in
    float32, as DequantizeLinear computes it, so the file computes what the s8s8 one does; the conv's
    input keeps its quantizer. The runtime then runs that conv with its float kernel. Returns their names."""
    import numpy as np
    from onnx import numpy_helper

    wanted = [CONV_SHAPES[k] for k in sorted(RULES[layout].float_convs)]
    if not wanted:
        return []
    graph = onnx_model.graph
    inits = {i.name: i for i in graph.initializer}
    producer, _ = links(graph)
    floated = []
    for conv in [n for n in graph.node if n.op_type == "Conv" and len(n.input) > 1]:
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[dq.input[0]])
        groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if q.ndim < 3 or q.shape[0] % groups or not any(f(groups, q.shape[1], q.shape[0] // groups) for f in wanted):
            continue
        floated.append(conv.name)
        if not write:
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1, q.dtype)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1

        def along(v: Any) -> Any:  # a per-channel parameter along the DequantizeLinear's axis
            return v.reshape(shape) if v.size > 1 else v.reshape([1] * q.ndim)

        values = (q.astype(np.int32) - along(zero.astype(np.int32))).astype(np.float32) * along(scale)
        name = f"{dq.output[0]}_float"
        graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
        conv.input[1] = name
    if write and floated:  # weight DequantizeLinears nothing reads now go, with their initializers
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        gone = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                and n.output[0] not in used]
        for node in gone:
            graph.node.remove(node)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for name in {i for n in gone for i in n.input if i in inits} - used:
            graph.initializer.remove(inits[name])
    return floated


def placement_problems(onnx_model: Any, layout: str) -> dict[str, str]:
    """Node name -> which of the layout's rules it breaks, for every conv/matmul/gemm (the layers INT8
    coverage counts): a float input that is not a DequantizeLinear (and the op it comes from), or, for
    layouts whose integer kernels need it, an output that no QuantizeLinear reads, a clamp the runtime
    cannot fold before that quantizer, or an input DequantizeLinear the runtime will share."""
    rules = RULES[layout]
    graph = onnx_model.graph
    inits = {i.name for i in graph.initializer}
    producer, readers = links(graph)
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
            if rules.one_reader_per_requantizer and shared_requantizer(producer, readers, name):
                problems[node.name] = (f"input {name!r} ends a requantizer chain (DQ -> Q -> DQ) other ops read too: "
                                       f"{layout}'s runtime merges it into one DequantizeLinear they share and fuses "
                                       f"no op whose DequantizeLinear has another reader")
                break
        if node.name in problems or node.op_type not in rules.quantized_outputs:
            continue
        clamp = unfolded_clamp(graph, readers, node, layout)
        outs = readers.get(node.output[0], [])
        follow = [r for r in outs if r.op_type in rules.folded_clamps]
        if clamp is not None:
            problems[node.name] = (f"a {clamp.op_type} before its QuantizeLinear that ONNX Runtime cannot fold: the "
                                   f"quantizer's range does not lie within the {clamp.op_type}'s bounds")
        elif not any(r.op_type == "QuantizeLinear" for r in outs + [x for f in follow for x in readers.get(f.output[0], [])]):
            problems[node.name] = (f"its output goes to no QuantizeLinear: the integer {node.op_type} of "
                                   f"{rules.runtimes} needs one")
    return problems
