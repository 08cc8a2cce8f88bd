"""INT8 QDQ layouts: the activation type each runtime's INT8 kernels want, from one fake-quantized model.

Brevitas exports the layout TensorRT's explicit quantization requires and OpenVINO runs at full speed:
``s8s8``, symmetric INT8 activations (zero point 0) and INT8 weights. ONNX Runtime's CPU QDQ fusions
(``ConvNodeGroupSelector`` and friends) turn ``DQ -> Conv -> Q`` into ``QLinearConv`` only when the
conv's input and output activations have the *same* type, and its x86 kernels are built around
``u8 x s8``: a conv reading a signed residual sum and writing an unsigned ReLU output stays in float
(37 of 52 convs of mobilenet_v2, INT8-NOTES trap 10). Its own quantizer (``quantize_static``) therefore
uses UINT8 activations everywhere: the ``u8s8`` layout.

The two layouts are the *same* quantization: a symmetric INT8 activation with scale s is the UINT8 one
with scale s and zero point 128 (q_u8 = q_s8 + 128, dequantized (q_u8 - 128) * s), so ``u8s8`` is
written from the ``s8s8`` file by shifting activation zero points, with no new rounding. No library pass
does this shift (ORT's quantizer picks types before it places nodes, from float data), hence the few
lines here; the graph walking uses ``onnxruntime.quantization``'s ``ONNXModel``.

``s8s8-onednn`` is OpenVINO CPU's: the s8s8 file with the convs its kernels run INT8 only in a slow
fallback (``artifacts.qdq_rules.RULES``) reading their weights as float values of the same grid. It is
written only for a model that has such convs; elsewhere OpenVINO CPU runs the s8s8 file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...artifacts.qdq_rules import ONEDNN_LAYOUT
from ..exporting import INPUT_NAME, OUTPUT_NAME
from .onnx_folds import fold_constant_clips, fold_pads_into_convs, gathers_before_dequantize, initializers_out_of_inputs


def write_u8s8(src: Path, dst: Path) -> int:
    """Write ``src`` (an s8s8 QDQ file) to ``dst`` with every INT8 activation made UINT8; returns how many
    activation quantizers changed. Weights (INT8 initializers read only by ``DequantizeLinear``) and
    INT32 biases are untouched: only a ``QuantizeLinear`` quantizes an activation."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization.onnx_model import ONNXModel

    from .int8_placement import (dequantized_scalar_operands, fused_gelus, insert_requantizers,
                                 private_requantizer_chains, quantize_before_clamps, quantize_before_moves)

    proto = onnx.load(str(src))
    fused_gelus(proto)  # one Gelu op where ORT's optimizer no longer finds the pattern (int8_placement)
    gathers_before_dequantize(proto)  # INT8 embedding rows looked up, then scaled (onnx_folds)
    quantize_before_moves(proto, "u8s8")  # a pool's quantizer written after its flatten (int8_placement)
    insert_requantizers(proto, "u8s8")  # ONNX Runtime needs a Q/DQ after grid-keeping ops (int8_placement)
    quantize_before_clamps(proto, "u8s8")  # a Relu/Clip ORT cannot fold into the quantizer after it
    private_requantizer_chains(proto, "u8s8")  # ORT shares the DQ it merges a requantizer chain into
    model = ONNXModel(proto)
    readers = model.input_name_to_nodes()
    shifted: dict[str, str] = {}

    def unsigned(zero_point: str) -> str:
        """The UINT8 twin of an INT8 zero point (or Clip bound) initializer, made once."""
        if zero_point not in shifted:
            values = numpy_helper.to_array(model.get_initializer(zero_point)).astype(np.int16) + 128
            shifted[zero_point] = f"{zero_point}_u8"
            model.add_initializer(numpy_helper.from_array(values.astype(np.uint8), shifted[zero_point]))
        return shifted[zero_point]

    changed = 0
    for quant in [n for n in model.nodes() if n.op_type == "QuantizeLinear"]:
        zero = model.get_initializer(quant.input[2]) if len(quant.input) > 2 else None
        if zero is None or zero.data_type != TensorProto.INT8:
            continue
        quant.input[2] = unsigned(quant.input[2])
        changed += 1
        pending = list(readers.get(quant.output[0], []))
        while pending:  # the quantized tensor's readers: DequantizeLinear, or a Clip (QCDQ), then DQs
            node = pending.pop()
            if node.op_type == "DequantizeLinear":
                node.input[2] = unsigned(node.input[2])
            elif node.op_type == "Clip":
                for k in (1, 2):
                    if len(node.input) > k and node.input[k]:
                        node.input[k] = unsigned(node.input[k])
                pending += readers.get(node.output[0], [])
            else:
                raise ValueError(f"{src.name}: a quantized tensor is read by {node.op_type} {node.name!r}, "
                                 f"not by DequantizeLinear: not a QDQ graph edgekd wrote")
    # after the shift: the constant's DequantizeLinear takes the type its op's other inputs now have
    dequantized_scalar_operands(proto, "u8s8")  # QLinearMul/QLinearAdd need their scalar operand dequantized
    model.remove_unused_constant()
    onnx.save(model.model, str(dst))
    return changed


def onednn_float_convs(path: Path) -> list[str]:
    """The convs of the s8s8 file ``path`` that the ``s8s8-onednn`` layout runs in float (none: the s8s8
    file is that layout already, and none is written)."""
    import onnx

    from .int8_placement import float_weight_convs

    return float_weight_convs(onnx.load(str(path)), ONEDNN_LAYOUT, write=False)


def write_s8s8_onednn(src: Path, dst: Path) -> int:
    """Write ``src`` (an s8s8 QDQ file) to ``dst`` with the convs ``RULES["s8s8-onednn"]`` names reading
    float weights (the values of their INT8 grid: the same function); returns how many."""
    import onnx

    from .int8_placement import float_weight_convs

    proto = onnx.load(str(src))
    floated = float_weight_convs(proto, ONEDNN_LAYOUT)
    onnx.save(proto, str(dst))
    return len(floated)


DYNAMIC_LAYOUT = "dynamic"
DYNAMIC_NOTE = ("INT8 weights as trained, activations quantized per call (ONNX Runtime's dynamic "
                "MatMulInteger kernels, its fast path for transformers on CPU)")


def write_dynamic(src: Path, dst: Path) -> int:
    """Write ``src`` (an s8s8 QDQ file of a transformer) as ONNX Runtime's dynamic-quantization layout:
    returns how many MatMuls that made integer.

    ONNX Runtime's static QDQ MatMul fusion leaves a BERT's query/key/value projections in float (its
    own ``quantize_static`` file too: 12 of 24 MatMuls INT8, and slower than FP32 on this CPU), while
    ``quantize_dynamic`` makes all 24 ``DynamicQuantizeMatMul`` and runs 1.7x faster than either. So for
    ORT the activation quantizers come out (each ``Q -> DQ`` pair on an activation is dropped) and the
    weights go back to float values that lie exactly on their trained INT8 grid; ONNX Runtime's own
    ``quantize_dynamic`` (per channel, symmetric INT8: scale = max|w| / 127, as Brevitas' weights
    have) then re-quantizes them to the same integers. Activation scales learned in QAT do not carry
    over (ORT measures each call's range), which is what this runtime's fast kernels do; accuracy is
    measured on the file, per target."""
    import tempfile

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnx_folds import fold_weight_transposes

    model = onnx.load(str(src))
    fold_weight_transposes(model)  # quantize_dynamic quantizes a MatMul whose weight is an initializer
    gathers_before_dequantize(model)  # INT8 embedding tables stay INT8, read row by row (onnx_folds)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    drop = []
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        source = producer.get(dq.input[0])
        if source is not None and source.op_type == "QuantizeLinear":  # an activation: the pair goes
            rename[dq.output[0]] = source.input[0]
            drop += [dq, source]
        elif dq.input[0] in inits:  # a weight: its float value on the INT8 grid
            q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
            scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
            zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 else 0.0
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            name = f"{dq.output[0]}_float"
            graph.initializer.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), name))
            rename[dq.output[0]] = name
            drop.append(dq)
    dropped = {id(n) for n in drop}
    keep = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(keep)
    for node in graph.node:
        for k, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[k] = name
    for out in graph.output:
        if out.name in rename:  # never a graph output here; kept safe
            raise ValueError(f"{src.name}: a graph output is a DequantizeLinear")
    used = {i for n in graph.node for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    with tempfile.TemporaryDirectory(prefix="edgekd-dynamic-") as tmp:
        floated = Path(tmp) / "float.onnx"
        onnx.save(model, str(floated))
        quantize_dynamic(str(floated), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    return sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(dst)).graph.node)


def export_qdq(qmodel: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """Export a fake-quantized model as QDQ ONNX (QuantizeLinear / DequantizeLinear pairs)."""
    import onnx
    from brevitas.export import export_onnx_qcdq

    from ...data.packed import export_signature
    from .int8_placement import float_dequantized_constants

    qmodel.eval()
    args, names, axes = export_signature(example, INPUT_NAME, OUTPUT_NAME)
    export_onnx_qcdq(qmodel, args if len(args) > 1 else example, export_path=str(path), dynamo=False,
                     opset_version=opset, input_names=names, output_names=[OUTPUT_NAME], dynamic_axes=axes)
    model = onnx.load(str(path))
    if (fold_constant_clips(model) + initializers_out_of_inputs(model) + fold_pads_into_convs(model)
            + float_dequantized_constants(model, "s8s8")):  # Brevitas writes the s8s8 layout
        onnx.save(model, str(path))
