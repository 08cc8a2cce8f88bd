"""Brevitas quantization (with ``quant_capture``, the only modules that import brevitas).

Follows the path measured in ../shared/INT8-NOTES.md so that the exported QDQ graph runs INT8 on
OpenVINO and ONNX Runtime and follows TensorRT's explicit-quantization form:

* ``preprocess_for_quantize`` traces the model and folds BatchNorm into the convs;
* ``quantize`` swaps in Brevitas layers: INT8 *per-channel symmetric* weights with the *full*
  range [-128, 127] (narrow range exports an ``int8 -> Clip -> DequantizeLinear`` chain that OpenVINO
  does not fold, trap 5), INT32 bias, INT8 per-tensor activations (unsigned after ReLU);
* Hardswish / Hardsigmoid / SiLU outputs are quantized too (trap 7), so every conv gets a
  quantized input;
* export through the TorchScript QCDQ exporter with ``dynamo=False`` and opset 17 (traps 4 and 6).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from ...artifacts.artifact import Artifact
from ..base import REBUILDERS
from .brevitas_rules import brevitas_rules, residual_budget
from ...errors import StageError, first_line
from .quant_capture import (QUANTIZABLE, chunks_as_functions, constant_layers, drop_identities, plain_layers,
                            matmul_inputs_quantized, quant_tensor_safe, quantizable_attention,
                            shape_quantizers_removed, sliced_outputs_quantized, traced_parts)


# Brevitas imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on every CPU-only
# run of a CUDA build of torch; edgekd never compiles extensions, so that line is noise to users.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def weight_width(bits: int, reduce_range: bool) -> int:
    """Bits weights really use: ``bits``, or 7 for 8-bit weights with ``reduce_range``."""
    return 7 if reduce_range and bits == 8 else bits


def weight_range(bits: int, reduce_range: bool) -> tuple[int, int]:
    """The integer range weights take, e.g. [-128, 127], [-64, 63] (reduce_range), [-8, 7] (4-bit)."""
    width = weight_width(bits, reduce_range)
    return -(2 ** (width - 1)), 2 ** (width - 1) - 1


def _weight_quant(reduce_range: bool, bits: int = 8, learned: bool = False) -> type:
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import Int8WeightPerChannelFloat

    class WeightPerChannelFullRange(Int8WeightPerChannelFloat):
        """Symmetric per-channel weights over the full signed range (zero point 0), stored as INT8;
        4-bit weights (W4A8) are INT8 values in [-8, 7]."""

        narrow_range = False
        bit_width = weight_width(bits, reduce_range)
        # learned: scales start from the weights' statistics, then train with QAT (LSQ-style)
        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS if learned else ScalingImplType.STATS

    return WeightPerChannelFullRange


def _embedding_quant(bits: int) -> tuple[type, dict]:
    """The layer-map entry of ``nn.Embedding``: Brevitas' ``QuantEmbedding`` with weight-only INT8, one
    symmetric scale per row (per token, zero point 0): on all-MiniLM-L6-v2's 30522x384 word table the
    rows keep 0.99997 mean cosine to FP32 (0.99876 with one scale for the table). The export writes it
    as ``DequantizeLinear(int8 table) -> Gather``, which OpenVINO runs as a compressed lookup and ORT's
    layouts get rewritten (``onnx_folds.gathers_before_dequantize``)."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat
    from brevitas.quant_tensor import _unpack_quant_tensor

    class RowQuantEmbedding(qnn.QuantEmbedding):
        """``QuantEmbedding`` with per-row scales."""

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            # Brevitas' QuantTensor lookup accepts per-tensor scales only; the dequantized table is the same
            table = _unpack_quant_tensor(self.quant_weight())
            return nn.functional.embedding(ids, table, self.padding_idx, self.max_norm, self.norm_type,
                                           self.scale_grad_by_freq, self.sparse)

    class EmbeddingPerRow(Int8WeightPerChannelFloat):
        narrow_range = False
        bit_width = bits

    return RowQuantEmbedding, {"weight_quant": EmbeddingPerRow, "return_quant_tensor": False}


CALIBRATIONS = ("percentile", "minmax", "mse")


def _act_quants(calibration: str, percentile: float) -> tuple[type, type]:
    """(signed, unsigned) per-tensor INT8 activation quantizers for a calibration method.

    ``percentile``: the scale covers that percentile of |x| (Brevitas' default, 99.999); ``minmax``:
    the same at 100, i.e. the observed maximum; ``mse``: the scale that minimises the quantization
    MSE over the calibration data (Brevitas' MSE quantizers).
    """
    from brevitas.quant import (Int8ActPerTensorFloat, Int8ActPerTensorFloatMSE, Uint8ActPerTensorFloat,
                                Uint8ActPerTensorFloatMSE)

    if calibration == "mse":
        return Int8ActPerTensorFloatMSE, Uint8ActPerTensorFloatMSE
    q = 100.0 if calibration == "minmax" else percentile

    class SignedAct(Int8ActPerTensorFloat):
        high_percentile_q = q

    class UnsignedAct(Uint8ActPerTensorFloat):
        high_percentile_q = q

    return SignedAct, UnsignedAct


def _layer_maps(reduce_range: bool, weight_bits: int, signed_act: type, unsigned_act: type,
                learned: bool = False, split_hardswish: bool = False) -> tuple[dict, dict, dict]:
    from brevitas.graph.quantize import COMPUTE_LAYER_MAP, QUANT_ACT_MAP, QUANT_IDENTITY_MAP
    from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat

    swap = {Int8ActPerTensorFloat: signed_act, Uint8ActPerTensorFloat: unsigned_act}

    def with_acts(table: dict) -> dict:
        return {k: (v if v is None else (v[0], {n: swap.get(q, q) if isinstance(q, type) else q
                                                 for n, q in v[1].items()}))
                for k, v in table.items()}

    weight_quant = _weight_quant(reduce_range, weight_bits, learned)
    compute = with_acts(COMPUTE_LAYER_MAP)
    for layer in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear):
        cls, kwargs = compute[layer]
        compute[layer] = (cls, {**kwargs, "weight_quant": weight_quant})
    acts = with_acts(QUANT_ACT_MAP)
    acts[nn.SiLU] = (_quant_gated(nn.Sigmoid, signed_act, unsigned_act), {"return_quant_tensor": True})
    if split_hardswish:
        acts[nn.Hardswish] = (_quant_gated(nn.Hardsigmoid, signed_act, unsigned_act), {"return_quant_tensor": True})
    for act in (nn.GELU,) if split_hardswish else (nn.Hardswish, nn.GELU):
        acts[act] = (_quant_after(act, signed_act), {"act_quant": signed_act, "return_quant_tensor": True})
    for act in (nn.Hardsigmoid, nn.Sigmoid):
        acts[act] = (_quant_after(act, signed_act), {"act_quant": unsigned_act, "return_quant_tensor": True})
    acts[nn.ReLU6] = (_quant_clamped_class(), {**acts[nn.ReLU6][1], "min_val": 0.0})
    return compute, acts, with_acts(QUANT_IDENTITY_MAP)


def _clamp(low: float, high: float) -> type[nn.Module]:
    """A module class computing ``clamp(x, low, high)`` with a no-argument constructor (Brevitas
    builds ``act_impl`` itself); deliberately not an ``nn.Hardtanh``, see ``QuantClamped``."""

    class Clamp(nn.Module):
        def __init__(self) -> None:  # Brevitas' injector reads the signature: no *args here
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(x, low, high)

    return Clamp


def _bounded_hardtanhs(modules: Iterable[nn.Module], acts: dict) -> None:
    """Give each plain ``nn.Hardtanh`` a ``QuantClamped`` with its own bounds: Brevitas' map passes the
    bounds as lambdas its activation handler never evaluates, so each distinct (min, max) pair gets a
    subclass marking it, and its own entry in ``acts``."""
    kinds: dict[tuple[float, float], type] = {}
    for module in modules:
        if type(module) is nn.Hardtanh:
            bounds = (float(module.min_val), float(module.max_val))
            if bounds not in kinds:
                kinds[bounds] = type("Hardtanh", (nn.Hardtanh,), {})
                acts[kinds[bounds]] = (_quant_clamped_class(), {**acts[nn.Hardtanh][1], "min_val": bounds[0],
                                                                 "max_val": bounds[1]})
            module.__class__ = kinds[bounds]


def _quant_clamped_class() -> type[nn.Module]:
    from brevitas.nn.quant_layer import QuantNonLinearActLayer as QuantNLAL

    class QuantClamped(QuantNLAL):
        """ReLU6 and Hardtanh whose float path clamps as the float model does.

        Brevitas' own mapping (``QuantReLU`` with ``max_val=6`` for ReLU6; ``QuantHardTanh``) leaves the
        clamp to the quantizer's range: its ``act_impl`` is a plain ReLU, or a Hardtanh it switches off
        when a quantizer is present. But calibration and bias correction run the model with quantization
        *off*, so they measured every later range on a network with no clamp: on the pretrained
        EfficientNet-Lite0 (ReLU6, activations past 6 everywhere) the bottleneck ranges came out 2.5x
        too wide (+-130 instead of +-52), INT8 top-1 left FP32's on 5 of 20 photographs, and rounding
        differences between any two runtimes were amplified 40x on the coarse grids. The clamp is a
        plain module so that it stays on in every mode; exported, it is a ``Clip`` that the quantizer's
        range makes redundant (ONNX Runtime folds it, OpenVINO runs it on the fly)."""

        def __init__(self, act_quant: type | None = None, min_val: float = 0.0, max_val: float = 6.0,
                     return_quant_tensor: bool = False, **kwargs) -> None:
            super().__init__(act_impl=_clamp(float(min_val), float(max_val)), passthrough_act=True,
                             input_quant=None, act_quant=act_quant, return_quant_tensor=return_quant_tensor,
                             min_val=min_val, max_val=max_val, **kwargs)

    return QuantClamped


def _quant_after(act: type[nn.Module], input_quant: type) -> type[nn.Module]:
    """A Brevitas activation that quantizes its input, runs ``act`` in float and quantizes its output.

    The input quantizer is what lets runtimes run the conv before it in INT8: ONNX Runtime fuses
    ``DQ -> Conv -> Q`` only, and a conv feeding a float Hardswish/SiLU/Sigmoid directly has no Q after
    it (mobilenet_v3: 10 of 52 convs stayed float; efficientnet_b0: 54 of 81). It is the default rather
    than a keyword because Brevitas' residual alignment rebuilds the module with ``act_quant`` alone.
    """
    from brevitas.nn.quant_layer import QuantNonLinearActLayer as QuantNLAL

    def plain_init(self: nn.Module) -> None:
        act.__init__(self)

    # Brevitas injects act_impl by its __init__ signature; some torch activations (Sigmoid) take *args
    impl = type(act.__name__, (act,), {"__init__": plain_init})
    default_input_quant = input_quant

    class QuantAfter(QuantNLAL):
        def __init__(self, act_quant=None, input_quant=default_input_quant, return_quant_tensor: bool = False,
                     **kwargs):
            super().__init__(act_impl=impl, passthrough_act=False, input_quant=input_quant,
                             act_quant=act_quant, return_quant_tensor=return_quant_tensor, **kwargs)

    QuantAfter.__name__ = f"Quant{act.__name__}"
    return QuantAfter


_MARKERS: dict[tuple[type, int | None], type] = {}


def _quant_gated(gate_act: type[nn.Module], signed_act: type, unsigned_act: type) -> type[nn.Module]:
    """``x * gate(x)`` with ``x``, the gate's output and the product each quantized: SiLU (gate Sigmoid)
    and Hardswish (gate Hardsigmoid; ``x * relu6(x + 3) / 6`` is exactly torch's Hardswish).

    Quantized as one activation, SiLU exports as DQ -> float Sigmoid -> float Mul -> Q, which ONNX
    Runtime runs in float on whole feature maps (efficientnet_b0: 49 of each, 1.35x slower than
    quantize_static); one HardSwish op, ORT splits into a float HardSigmoid and a float Mul
    (mobilenet_v3_small: 19 float Muls, 1.23x slower than quantize_static). In this form ORT runs
    ``QLinearSigmoid`` (or its HardSigmoid between a DQ and a Q) + ``QLinearMul``, as its own quantizer's
    output gets, and OpenVINO runs the same graph in INT8 as well.
    """
    import brevitas.nn as qnn

    gate = _quant_after(gate_act, None)
    name = {nn.Sigmoid: "SiLU", nn.Hardsigmoid: "Hardswish"}.get(gate_act, f"{gate_act.__name__}Gated")

    class QuantGated(nn.Module):
        def __init__(self, return_quant_tensor: bool = True, **kwargs) -> None:
            super().__init__()
            # not named input_quant/act_quant: Brevitas' graph passes read those names as quant proxies
            self.x_quant = qnn.QuantIdentity(act_quant=signed_act, return_quant_tensor=True)
            self.gate = gate(act_quant=unsigned_act, return_quant_tensor=True)
            self.product_quant = qnn.QuantIdentity(act_quant=signed_act, return_quant_tensor=return_quant_tensor)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.x_quant(x)
            return self.product_quant(x * self.gate(x))

    QuantGated.__name__ = f"Quant{name}"
    return QuantGated


def _marker(cls: type, bits: int | None) -> type:
    """A subclass of ``cls`` that marks one layer for its own precision (``None``: keep float).

    Brevitas' graph quantizer picks a layer's quantized replacement by its exact type, so a marked
    layer can get its own entry in the layer map without touching any other layer.
    """
    key = (cls, bits)
    if key not in _MARKERS:
        _MARKERS[key] = type(f"{cls.__name__}{'Float' if bits is None else f'W{bits}'}", (cls,), {})
    return _MARKERS[key]


def layer_names(model: nn.Module) -> list[str]:
    """Names of the layers quantization acts on (convs and linears), in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


@dataclass(frozen=True)
class QuantSpec:
    """How ``quantize_model`` quantizes: the quantize stage's keys, and what an INT8 artifact records so
    that it is rebuilt the same way (``rebuild_int8``). Each field is described in ``quantize_model``."""

    unsigned_input: bool = False
    reduce_range: bool = False
    calibration: str = "percentile"
    percentile: float = 99.999
    weight_bits: int = 8
    overrides: dict[str, int | None] | None = None
    learned_scales: bool = False
    hardswish: str = "fused"
    embedding_bits: int | None = None  # records before issue 25 have no key: their tables stayed float


def quantize_model(model: nn.Module, spec: QuantSpec = QuantSpec(), example: torch.Tensor | None = None) -> nn.Module:
    """A fake-quantized W8A8 copy of ``model`` (the original is left untouched), quantized as ``spec`` says.

    ``spec.unsigned_input``: the data is never negative (images in [0, 1]), so the graph input is
    quantized as UINT8. A signed INT8 input wastes a bit on such data and, worse, ONNX Runtime's
    AVX2 kernels (no VNNI) shift it by +128 into the range where their int16 ``vpmaddubsw`` sums
    saturate: on AMD EPYC / AVX2 a digits student lost 70% top-1 agreement from that alone.
    ``reduce_range``: 7-bit weights in [-64, 63] (still stored as INT8), so that u8 x s8 pair sums
    fit int16 on x86 CPUs without VNNI (ONNX Runtime's documented remedy for that saturation).
    ``calibration``: how activation scales are estimated from calibration data (``CALIBRATIONS``).
    ``weight_bits``: 8 (W8A8) or 4 (W4A8: weights in [-8, 7], still stored and executed as INT8).
    ``overrides``: layer name -> weight bits for that layer, or ``None`` to keep it in float (its
    input stays quantized where the previous layer quantizes it; the layer itself runs in float).
    ``learned_scales``: weight scales become parameters that QAT trains (activation scales already are:
    Brevitas initialises them from calibration statistics, then learns them).
    ``hardswish``: "fused" (one quantized activation) or "split" (``x * hardsigmoid(x)``, ``_quant_gated``).
    ``embedding_bits``: 8 stores lookup tables (``nn.Embedding``: a text model's token, position and
    segment tables) as INT8, weight-only, per row (``_embedding_quant``); ``None`` keeps them float.
    ``example``: one input at the exported shape; with it, conv subclasses that pad at run time
    (timm's ``Conv2dSame``) become a fixed pad plus a plain conv, and models whose control flow reads
    tensor shapes are traced with those shapes' values (``edgekd.stages.quantize.quant_capture``).

    The result carries ``quant_mode`` ("graph"; "graph-unaligned-adds" where Brevitas could not align
    every add, ``_graph_mode``; "parts" where only submodules trace; "layerwise" for transformers and
    residual streams, ``_layerwise``) and
    ``kept_float`` (layer name -> why it could not be quantized).
    """
    with warnings.catch_warnings():  # "fast_hadamard_transform package not found": unused here
        warnings.simplefilter("ignore", UserWarning)
        import brevitas.graph.quantize  # noqa: F401 - imported once here, quietly

    from ...models.text import TextModel

    if spec.calibration not in CALIBRATIONS:
        raise StageError(f"quantize: unknown calibration {spec.calibration!r}; valid: {', '.join(CALIBRATIONS)}")
    if spec.hardswish not in ("fused", "split"):
        raise StageError(f"quantize: hardswish must be fused or split, not {spec.hardswish!r}")
    model = copy.deepcopy(model).eval()
    # Hugging Face encoders are not traceable by torch.fx (their forward reads shapes and branches on
    # them): they are quantized as modules, layerwise, with no graph to rewrite
    text = isinstance(model, TextModel)
    kept_float = plain_layers(model, example, tuple(_MARKERS.values())) if example is not None and not text else {}
    signed_act, unsigned_act = _act_quants(spec.calibration, spec.percentile)
    maps = _layer_maps(spec.reduce_range, spec.weight_bits, signed_act, unsigned_act, spec.learned_scales,
                       spec.hardswish == "split")
    unplaced = dict(spec.overrides or {})  # override name -> bits, until a part holds that layer
    names = {id(m): name for name, m in model.named_modules()}  # tracing keeps the layer objects
    constant = constant_layers(model, example) if example is not None and not text else {}
    automatic = set(constant) - set(unplaced)  # layers computing constants stay float unless overridden
    unplaced.update({name: None for name in automatic})
    kept_float.update({name: constant[name] for name in automatic})
    marks = lambda graph: _mark_overrides(graph, names, unplaced, maps[0], spec.reduce_range,  # noqa: E731
                                          spec.learned_scales)
    if spec.embedding_bits:
        maps[0][nn.Embedding] = _embedding_quant(spec.embedding_bits)
    if text:
        _bounded_hardtanhs(model.modules(), maps[1])
        marks(model)
        qmodel = _layerwise(model, maps[0], signed_act, unsigned_act, traced_graph=False)
    else:
        qmodel = _quantize_parts(model, example, maps, (signed_act, unsigned_act), marks, spec.unsigned_input)
    for name in automatic:  # a layer in no traced part is not an override the user got wrong
        unplaced.pop(name, None)
    if unplaced:
        raise StageError(f"quantize: override names {next(iter(unplaced))!r}, which is not a conv or linear layer "
                         f"of the traced model; layers: {', '.join(layer_names(model)[:8])}")
    qmodel.kept_float = kept_float
    if spec.unsigned_input and not text and qmodel.quant_mode != "parts":  # token ids feed embeddings, not quantizers
        _make_inputs_unsigned(qmodel, unsigned_act)
    return qmodel


def _quantize_parts(model: nn.Module, example: torch.Tensor | None, maps: tuple[dict, dict, dict],
                    act_quants: tuple[Any, Any], marks: Callable[[nn.Module], None], unsigned_input: bool) -> nn.Module:
    """Each part of ``model`` torch.fx traces (the whole model where it can) quantized in graph mode:
    with residual adds and concats aligned where Brevitas can align them, else each add on its own grids,
    else layerwise. Returns the quantized model (``quant_mode`` "parts" when its own forward stays Python)."""
    compute, acts, identities = maps
    signed_act, unsigned_act = act_quants
    parts = traced_parts(model, example)
    reading_input = _parts_reading(model, [n for n in parts if n], example) if unsigned_input else set()
    qmodel = model
    for name, graph in parts.items():
        chunks_as_functions(graph)
        drop_identities(graph)
        _bounded_hardtanhs(graph.modules(), acts)
        marks(graph)
        fallback = copy.deepcopy(graph)  # Brevitas rewrites the graph in place, also when it gives up
        try:  # every activation quantized, residual adds and concats aligned, where Brevitas can align them
            qpart = _graph_mode(graph, compute, acts, identities, signed_act, unsigned_act)
        except ResidualsUnaligned:
            last = copy.deepcopy(fallback)
            try:  # every activation quantized, each add's inputs on grids of their own
                qpart = _graph_mode(fallback, compute, acts, identities, signed_act, unsigned_act,
                                    aligned_adds=False)
            except ResidualsUnaligned:
                qpart = _layerwise(last, compute, signed_act, unsigned_act, traced_graph=True)
        if not name:
            qmodel = qpart
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, qpart)
    if "" not in parts:  # the model's own forward() stays Python between its quantized parts
        qmodel, qmodel.quant_mode = model, "parts"
        for name in reading_input:  # the parts handed the model's input itself (a stem)
            _make_inputs_unsigned(model.get_submodule(name), unsigned_act)
    return qmodel


def _mark_overrides(graph: nn.Module, names: dict[int, str], unplaced: dict[str, int | None], compute: dict,
                    reduce_range: bool, learned_scales: bool) -> None:
    """Give each layer of ``graph`` (the model or a traced part of it) that ``unplaced`` names its own class
    and layer-map entry (``_marker``), and take its name off ``unplaced``. ``names``: the model's layer
    names by object (a part names its layers from itself)."""
    for layer in graph.modules():
        name = names.get(id(layer))
        if name not in unplaced or not isinstance(layer, QUANTIZABLE):
            continue
        bits = unplaced.pop(name)
        base = type(layer)
        layer.__class__ = _marker(base, bits)
        if bits is None:
            compute[layer.__class__] = None
        else:
            cls, kwargs = compute[base]
            compute[layer.__class__] = (cls, {**kwargs, "weight_quant": _weight_quant(reduce_range, bits, learned_scales)})


UNALIGNED_ADDS = "graph-unaligned-adds"  # graph mode, each add's inputs on grids of their own


class ResidualsUnaligned(Exception):
    """Brevitas' residual handler found no grids that align every add and concat within its budget."""


def _graph_mode(graph: nn.Module, compute: dict, acts: dict, identities: dict, signed_act: type,
                unsigned_act: type, aligned_adds: bool = True) -> nn.Module:
    """Brevitas' graph mode: every activation quantized and the inputs of each residual add and concat
    aligned, which lets runtimes run the adds, activations and pools between layers in INT8 too.

    Tried on every traced model, hybrids with attention included (``F.scaled_dot_product_attention``
    becomes ``QuantAttention`` first): MobileNetV4-hybrid and FastViT-SA ran their convolutional stages
    layerwise before, with every ReLU and residual add in float between a DQ and a Q on ONNX Runtime
    (1.3-1.5x quantize_static's latency). Where the residual handler finds no alignment (a ViT's residual
    stream; EfficientFormer-L1), it gives up after ``residual_budget`` steps instead of 9 999 (5-6 minutes),
    and ``quantize_model`` quantizes the model layerwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from brevitas.graph.quantize import quantize

    quantizable_attention(graph, signed_act, unsigned_act)  # the matmuls inside F.scaled_dot_product_attention
    try:
        with brevitas_rules(max_residual_iters=residual_budget(graph), aligned_adds=aligned_adds):
            qmodel = quantize(graph, quant_identity_map=identities, compute_layer_map=compute, quant_act_map=acts)
        shape_quantizers_removed(qmodel)  # quantizers Brevitas put on B, C, H, W read off x.shape
        sliced_outputs_quantized(qmodel, signed_act)  # a layer read only in pieces (rexnet)
        quant_tensor_safe(qmodel)  # tensor code (x[:, :c], x.mean()) that QuantTensors cannot run
        matmul_inputs_quantized(qmodel, signed_act, unsigned_act)  # q @ k written in code
    except Exception as exc:  # noqa: BLE001 - Brevitas raises plain RuntimeErrors / AssertionErrors
        if "Residual handler could not find a solution" in first_line(exc):
            raise ResidualsUnaligned(first_line(exc)) from None
        raise StageError(f"quantize: Brevitas could not quantize this model ({first_line(exc, with_type=True)})") from None
    qmodel.quant_mode = "graph" if aligned_adds else UNALIGNED_ADDS
    return qmodel


def _layerwise(graph: nn.Module, compute: dict, signed_act: type, unsigned_act: type,
               traced_graph: bool = True) -> nn.Module:
    """Brevitas' layerwise mode: each conv/linear quantizes its own input (and both attention matmuls
    theirs), with no alignment across residual adds. Text encoders take this path, and every model whose
    residuals Brevitas' graph mode cannot align (a ViT's residual stream, ``_graph_mode``): their adds and
    LayerNorms run in float on every runtime anyway; what INT8 buys there is the matmuls, and those all
    get quantized inputs."""
    import brevitas.nn as qnn
    from brevitas.graph.quantize import layerwise_quantize
    from brevitas.quant import Int32Bias

    # convs (a ViT's patch embedding) also quantize their output: a conv with no Q after it stays float on ORT
    layer_map = {layer: None if spec is None else
                 (spec[0], {**spec[1], "input_quant": signed_act, "return_quant_tensor": False,
                            **({} if issubclass(layer, nn.Linear) else {"output_quant": signed_act})})
                 for layer, spec in compute.items() if isinstance(layer, type) and issubclass(layer, QUANTIZABLE)}
    if compute.get(nn.Embedding):  # weight-only: the table's rows feed adds and norms, not a quantized input
        layer_map[nn.Embedding] = compute[nn.Embedding]
    if traced_graph:  # F.scaled_dot_product_attention calls can be found only in a traced graph
        quantizable_attention(graph, signed_act, unsigned_act)
    # nn.MultiheadAttention (torchvision's ViT) uses its projections' weights functionally: Brevitas'
    # QuantMultiheadAttention quantizes them and both attention matmuls, and its inner layers are left to it
    weight_quant = compute[nn.Linear][1]["weight_quant"] if compute.get(nn.Linear) else None
    layer_map[nn.MultiheadAttention] = (qnn.QuantMultiheadAttention, {
        "in_proj_input_quant": signed_act, "in_proj_weight_quant": weight_quant, "in_proj_bias_quant": Int32Bias,
        "attn_output_weights_quant": unsigned_act, "q_scaled_quant": signed_act, "k_transposed_quant": signed_act,
        "v_quant": signed_act, "out_proj_input_quant": signed_act, "out_proj_weight_quant": weight_quant,
        "out_proj_bias_quant": Int32Bias, "return_quant_tensor": False})
    inside_attention = [f"{name}.{child}" for name, m in graph.named_modules()
                        if isinstance(m, nn.MultiheadAttention) for child, _ in m.named_children()]
    try:
        qmodel = layerwise_quantize(graph, compute_layer_map=layer_map, name_blacklist=inside_attention)
    except Exception as exc:  # noqa: BLE001 - Brevitas raises plain RuntimeErrors / AssertionErrors
        raise StageError(f"quantize: Brevitas could not quantize this model layerwise "
                         f"({first_line(exc, with_type=True)})") from None
    if traced_graph:  # q @ k written in code (LeViT's attention): layers only quantize their own inputs
        matmul_inputs_quantized(qmodel, signed_act, unsigned_act)
    qmodel.quant_mode = "layerwise"
    return qmodel


@torch.no_grad()
def _parts_reading(model: nn.Module, names: list[str], example: torch.Tensor | None) -> set[str]:
    """Which of the submodules ``names`` the float ``model`` hands its input itself (the same tensor
    object, so the same non-negative values): in parts mode those parts' input quantizers, not the
    model's, read the image, and were left signed (half the grid unused on [0, 1] pixels)."""
    if example is None or not names:
        return set()
    seen: set[str] = set()

    def note(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if any(a is example for a in (*args, *kwargs.values())):
                seen.add(name)
        return hook

    hooks = [model.get_submodule(n).register_forward_pre_hook(note(n), with_kwargs=True) for n in names]
    try:
        model.eval()(example)
    finally:
        for handle in hooks:
            handle.remove()
    return seen


def _make_inputs_unsigned(qmodel: nn.Module, unsigned_act: type) -> None:
    """Swap the quantizers that read graph inputs directly for UINT8 ones."""
    import brevitas.nn as qnn

    for node in qmodel.graph.nodes:
        if node.op != "placeholder":
            continue
        for user in node.users:
            if user.op == "call_module" and isinstance(qmodel.get_submodule(user.target), qnn.QuantIdentity):
                qmodel.add_submodule(user.target, qnn.QuantIdentity(act_quant=unsigned_act, return_quant_tensor=True))


FLOAT_PATH_TOLERANCE = 1e-3  # BatchNorm folding changes float outputs by ~1e-6 of their range


@torch.no_grad()
def float_path_difference(model: nn.Module, qmodel: nn.Module, x: torch.Tensor) -> float:
    """Largest |difference| between ``model`` and ``qmodel`` with every quantizer switched off, relative
    to the float output's range: zero up to float rounding when the quantized model is the float one.

    Calibration and bias correction run ``qmodel`` in that mode, so any activation whose float form
    differs there (Brevitas' ReLU6 without its clamp, ``QuantClamped``) corrupts every range measured
    after it; this is the general check that catches the next such module, not a list of them."""
    from brevitas.graph.calibrate import quantization_status_manager

    def first(out: object) -> torch.Tensor:
        out = out[0] if isinstance(out, (tuple, list)) else out
        return getattr(out, "value", out).float()

    ref = first(model.eval()(x))
    with quantization_status_manager(qmodel, disable_act_quant=True, disable_weight_quant=True,
                                     disable_bias_quant=True, is_training=False):
        got = first(qmodel(x))
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


@torch.no_grad()
def calibrate(qmodel: nn.Module, batches: Iterable[Any], bias_correction: bool = False) -> None:
    """Set activation scales from statistics over ``batches`` (a loader of ``(x, ...)`` or tensors);
    then, optionally, Brevitas' bias correction (each layer's bias absorbs the mean shift its
    quantized weights cause)."""
    from brevitas.graph.calibrate import bias_correction_mode, calibration_mode

    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))

    def inputs() -> Iterator[torch.Tensor]:  # on the model's device: calibration runs where training does
        for b in batches:
            yield (b[0] if isinstance(b, (tuple, list)) else b).to(device)

    qmodel.eval()
    with torch.no_grad(), calibration_mode(qmodel):
        for x in inputs():
            qmodel(x)
    if bias_correction:
        with torch.no_grad(), bias_correction_mode(qmodel):
            for x in inputs():
                qmodel(x)
    # Brevitas' calibration_mode saves each quantizer's observer_only flag per proxy and restores it on
    # exit; a scaling module shared by two proxies (the aligned inputs of a Concat: squeezenet's Fire,
    # inception's blocks) is saved a second time after the first proxy already set it, so it comes back
    # observer-only: that quantizer stops rounding in torch while the exported file still quantizes
    # (squeezenet1_0's file was 20 dB from its fake-quant model). Calibration is over: none observes only.
    for module in qmodel.modules():
        if getattr(module, "observer_only", False):
            module.observer_only = False
    sample = next(inputs(), None)
    if sample is not None:
        fit_biases_in_int32(qmodel, sample)


# Bias integers must stay near-exact in float32, where Brevitas computes them: it refuses a bias whose
# value / scale is more than 0.2 from an integer ("QuantTensor not valid" at export), which float32 rounding
# reaches around 2**21 steps (timm ghostnet's squeeze-excite convs: input scale x weight scale 2.7e-9, biases of
# 1.4e7 steps); past 2**31 - 1 a bias saturates, and a saturated positive one is exported as -2**31 (float32
# rounds 2**31 - 1 up, which wraps): the channel then computes its bias with the wrong sign.
INT32_BIAS_LIMIT = 2.0 ** 20


@torch.no_grad()
def fit_biases_in_int32(qmodel: nn.Module, x: torch.Tensor) -> list[str]:
    """Raise the weight scale of every channel whose INT32 bias would leave ``INT32_BIAS_LIMIT``; returns
    the layers changed.

    An INT32 bias has the scale input_scale x weight_scale. A channel whose weights are almost zero
    (after BatchNorm folding: 1e-7 in EfficientNet-Lite0's depthwise convs, channels the training let die)
    gets a weight scale near 1e-9, and its bias (0.48) needs 4e9 steps: it saturated, in the fake-quant
    model at half its value and in the exported file at minus that (the locator in ``int8_fidelity``
    named the op). ONNX Runtime's quantizer has the same rule (``_adjust_weight_scale_for_int32_bias``):
    the weight scale grows until the bias fits. Brevitas derives weight scales from the weights' largest
    magnitude, so that channel's largest weight is set to the magnitude the needed scale implies: the
    output changes by at most |bias| x 2**-23 of the output range. Learned weight scales (QAT
    ``learned_scales``) are parameters and are raised directly."""
    bias_scales: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in qmodel.named_modules():
        proxy = getattr(module, "bias_quant", None)
        if (proxy is None or getattr(module, "bias", None) is None or not getattr(proxy, "is_quant_enabled", False)
                or not getattr(proxy, "requires_input_scale", False)):
            continue

        def hook(_module: nn.Module, _inputs: Any, out: Any, name: str = name) -> None:
            if getattr(out, "scale", None) is not None:
                bias_scales[name] = out.scale.detach().flatten()

        handles.append(proxy.register_forward_hook(hook))
    try:
        qmodel.eval()(x)
    finally:
        for h in handles:
            h.remove()
    changed = []
    for name, bias_scale in bias_scales.items():
        module = qmodel.get_submodule(name)
        need = module.bias.detach().abs().flatten() / INT32_BIAS_LIMIT
        if bias_scale.numel() != need.numel() or not bool((need > bias_scale).any()):
            continue
        weight = module.quant_weight()
        weight_scale = weight.scale.detach().flatten().expand(need.numel())
        levels = float(2 ** (int(weight.bit_width) - 1) - 1)
        wanted = need / (bias_scale / weight_scale)  # the weight scale that makes the bias fit
        flat = module.weight.data.view(module.weight.shape[0], -1)
        for c in (need > bias_scale).nonzero().flatten().tolist():
            k = int(flat[c].abs().argmax())
            sign = 1.0 if float(flat[c, k]) >= 0 else -1.0
            flat[c, k] = sign * float(wanted[c]) * levels * 1.01
        scaling = getattr(module.weight_quant.tensor_quant, "scaling_impl", None)
        value = getattr(scaling, "value", None)
        if isinstance(value, nn.Parameter) and value.numel() == need.numel():  # learned per-channel scales
            value.data.copy_(torch.maximum(value.data.flatten(), wanted * 1.01).view_as(value))
        changed.append(name)
    if changed:  # Brevitas caches each bias' scale from the last forward, and export reads that cache
        qmodel(x)
    return changed


def rebuild_int8(artifact: Artifact, float_parent: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """The fake-quantized module of a ``torch-int8`` artifact, rebuilt from its float parent as the quantize
    stage built it: with the same ``example`` input (the stage's ``splits.example(1, "test")``), without
    which a model whose forward reads its input's shape traces into other modules and its saved weights
    do not fit (a resumed run of such a model failed here)."""
    from safetensors.torch import load_file

    from ...models.checkpoint import versioned

    q = artifact.meta["quantization"]
    recorded = {k: q[k] for k in QuantSpec.__dataclass_fields__ if k in q}  # older runs lack the newer keys
    qmodel = quantize_model(float_parent, QuantSpec(**recorded), example=example)
    state = versioned(load_file(str(Path(artifact.path) / "model.safetensors")), qmodel.state_dict())
    missing, unexpected = qmodel.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(("zero_point", "counter", "buffer")) for k in missing):
        raise StageError(f"artifact {artifact.variant}: quantized weights do not fit the rebuilt model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return qmodel.eval()


@REBUILDERS.register("torch-int8")
def _rebuild_torch_int8(artifact: Artifact, parent: Callable[[], nn.Module], example: torch.Tensor) -> nn.Module:
    return rebuild_int8(artifact, parent(), example)

