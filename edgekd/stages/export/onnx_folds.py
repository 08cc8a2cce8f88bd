"""Folds on an exported QDQ graph that keep it runtime-neutral (the same file serves ONNX Runtime,
OpenVINO and TensorRT) and that no library pass does alone: ORT's offline optimizer folds these too,
but also rewrites the graph into ORT-only fused ops."""

from __future__ import annotations

from typing import Any


def initializers_out_of_inputs(model: "onnx.ModelProto") -> int:
    """Drop graph inputs that are initializers (float layers kept by an override are exported so);
    as inputs, runtimes treat them as overridable and skip constant folding. Returns how many."""
    names = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in names]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return dropped


def fold_constant_clips(model: "onnx.ModelProto") -> int:
    """Replace every ``Clip`` whose inputs are all initializers by its clipped initializer.

    Brevitas exports sub-8-bit or narrow-range weights as ``int8 -> Clip -> DequantizeLinear``;
    OpenVINO does not fold that Clip and then runs the conv in float (INT8-NOTES trap 5). No
    library pass does this one fold without also rewriting the graph for one runtime (ORT's
    offline optimizer does), hence these few lines. Returns how many Clips were folded.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "Clip" or not all(not name or name in inits for name in node.input):
            continue
        def const(k: int) -> "np.ndarray | None":
            return numpy_helper.to_array(inits[node.input[k]]) if len(node.input) > k and node.input[k] else None

        data, lo, hi = const(0), const(1), const(2)
        clipped = np.clip(data, data.min() if lo is None else lo, data.max() if hi is None else hi)
        graph.initializer.append(numpy_helper.from_array(clipped.astype(data.dtype), node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return len(folded)


def constant_value(model: Any, name: str) -> Any:
    """The value of tensor ``name`` when it depends on constants only (an initializer, or a chain of
    nodes over ``Constant`` nodes and initializers, as the TorchScript exporter writes ``F.pad``'s
    pads), computed by ONNX's reference evaluator; None when it depends on a graph input."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name])
    producer = {o: n for n in model.graph.node for o in n.output}
    chain, todo = [], [name]
    while todo:
        tensor = todo.pop()
        if tensor in inits or not tensor:
            continue
        node = producer.get(tensor)
        if node is None:  # a graph input
            return None
        if node not in chain:
            chain.append(node)
            todo.extend(node.input)
    order = [n for n in model.graph.node if n in chain]
    used = {i for n in order for i in n.input}
    sub = helper.make_model(
        helper.make_graph(order, "constant", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                          [i for i in model.graph.initializer if i.name in used]),
        opset_imports=model.opset_import)
    return ReferenceEvaluator(sub).run(None, {})[0]


def fold_pads_into_convs(model: Any) -> int:
    """Zero ``Pad`` -> ``Conv`` becomes one ``Conv`` with (asymmetric) ``pads``: onnxoptimizer's
    ``fuse_pad_into_conv``, after the pads the exporter computes from constants are made one
    initializer (the pass reads only that form). Between a ``DequantizeLinear`` and its conv a Pad stops
    ONNX Runtime's QDQ fusion (TF-"SAME" convs, ``edgekd.stages.quantize.brevitas_rules``). Returns how many were folded."""
    import numpy as np
    import onnxoptimizer
    from onnx import numpy_helper

    readers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    ready = 0
    for pad in [n for n in model.graph.node if n.op_type == "Pad"]:
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        fill = constant_value(model, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0
        pads = constant_value(model, pad.input[1]) if len(pad.input) > 1 else None
        if (mode != b"constant" or fill is None or np.any(fill != 0) or pads is None
                or any(r.op_type != "Conv" for r in readers.get(pad.output[0], []))):
            continue
        folded_name = f"{pad.name or pad.output[0]}_pads"
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(pads, dtype=np.int64), folded_name))
        pad.input[1] = folded_name
        ready += 1
    if not ready:
        return 0
    before = sum(n.op_type == "Pad" for n in model.graph.node)
    optimized = onnxoptimizer.optimize(model, ["fuse_pad_into_conv", "eliminate_deadend"])
    model.CopyFrom(optimized)
    return before - sum(n.op_type == "Pad" for n in model.graph.node)


def fold_weight_transposes(model: Any) -> int:
    """``DequantizeLinear(W) -> Transpose`` on a constant 2-D weight becomes ``DequantizeLinear(Wᵀ)``.

    Brevitas exports a quantized ``nn.Linear`` as ``DQ(W) -> Transpose -> MatMul``; ``write_dynamic``
    needs the weight as the MatMul's own initializer for ``quantize_dynamic`` to quantize it. Not applied
    to the QDQ file itself: OpenVINO's low-precision pass then ran a BERT's MatMuls in float (3 of 18
    INT8, from 12), and ONNX Runtime fused no more MatMuls with it than without. Returns how many."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    folded = 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose" or not node.input:
            continue
        dq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or readers.get(dq.output[0]) != 1:
            continue
        weight = numpy_helper.to_array(inits[dq.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if weight.ndim != 2 or perm not in (None, [1, 0]) or readers.get(dq.input[0]) != 1:
            continue
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(weight.T.copy(), dq.input[0]))
        axis = next((a for a in dq.attribute if a.name == "axis"), None)
        if axis is not None:
            axis.i = 1 - (axis.i % 2)
        for n in model.graph.node:  # the Transpose's readers read the DequantizeLinear instead
            for k, name in enumerate(n.input):
                if name == node.output[0]:
                    n.input[k] = dq.output[0]
        for k, out in enumerate(model.graph.output):
            if out.name == node.output[0]:
                out.name = dq.output[0]
        model.graph.node.remove(node)
        folded += 1
    return folded


def gathers_before_dequantize(model: Any) -> int:
    """``DequantizeLinear(int8 table) -> Gather(ids)`` becomes ``Gather(int8 table, ids) -> Cast -> Mul(scales)``.

    Brevitas exports a quantized ``nn.Embedding`` (per-row scales, ``quantization._embedding_quant``) as a
    lookup into the dequantized table. OpenVINO reads that form as a compressed Gather (0.22 ms for 128
    rows of a 30522x384 table, measured); ONNX Runtime keeps a DequantizeLinear of a constant unfolded and
    dequantizes the whole table on every call (6.5 ms). For ORT's layouts the rows are looked up first
    and then scaled, each by its own scale, looked up the same way: the same arithmetic, bit for bit
    (zero points are 0; a table with others is left as it is), 0.054 ms. The dequantized tables no
    longer read are dropped by onnxoptimizer's dead-end and unused-initializer passes. Returns how many
    Gathers were rewritten."""
    import numpy as np
    import onnx
    import onnxoptimizer
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rewritten = 0
    for gather in [n for n in graph.node if n.op_type == "Gather"]:
        dq = producer.get(gather.input[0])
        if (dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits
                or _attribute(gather, "axis", 0) != 0):
            continue
        table = inits[dq.input[0]]
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else 0
        if np.any(zero != 0):
            continue
        axis = _attribute(dq, "axis", 1) % len(table.dims)
        name = gather.output[0]
        nodes = [helper.make_node("Gather", [dq.input[0], gather.input[1]], [f"{name}_int8"], axis=0),
                 helper.make_node("Cast", [f"{name}_int8"], [f"{name}_steps"], to=onnx.TensorProto.FLOAT)]
        if scale.size > 1 and axis == 0:  # one scale per row: look the rows' scales up too, as a column
            graph.initializer.append(numpy_helper.from_array(scale.reshape(-1, *[1] * (len(table.dims) - 1)),
                                                             f"{name}_row_scales"))
            nodes.append(helper.make_node("Gather", [f"{name}_row_scales", gather.input[1]], [f"{name}_scales"], axis=0))
        else:  # per tensor, or along a table axis that stays the last axes of the rows
            shape = [-1 if k == axis else 1 for k in range(1, len(table.dims))] if scale.size > 1 else []
            graph.initializer.append(numpy_helper.from_array(scale.reshape(shape), f"{name}_scales"))
        nodes.append(helper.make_node("Mul", [f"{name}_steps", f"{name}_scales"], [name]))
        at = list(graph.node).index(gather)
        for k, node in enumerate(nodes):
            graph.node.insert(at + k, node)
        graph.node.remove(gather)
        rewritten += 1
    if rewritten:
        model.CopyFrom(onnxoptimizer.optimize(model, ["eliminate_deadend", "eliminate_unused_initializer"]))
    return rewritten


def _attribute(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)
