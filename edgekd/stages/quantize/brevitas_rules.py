"""What Brevitas' graph quantizer should know about ops that keep values: pieces keep the sign of the
tensor they come from, and zero padding keeps both the sign and the quantization grid.

**Signs.** 
Brevitas picks a requantizer's sign from what feeds it: the output of a ReLU, or of a reshape, concat or
add of such outputs, is unsigned. It does not follow ``torch.chunk`` / ``torch.split`` pieces nor
``.contiguous()``, so shufflenet's concats (``cat(x1, branch(x2))`` with ``x1`` a chunk of the previous
block's ReLU outputs) got *signed* quantizers shared with the branch's final ReLU. Numerically that only
wastes a bit; on ONNX Runtime it costs the conv: ORT folds a ``Relu`` into ``QLinearConv`` only when the
quantizer after it starts its range at zero, so 13 of shufflenet_v2's 57 convs stayed float and the file
ran 1.2x slower than ``quantize_static``'s.

The decision lives in one Brevitas function, ``quantize_impl.are_inputs_unsigned``, looked up by name at
each call; an extended one takes its place: slicing, chunking and making contiguous pass the
question on to the tensor they read (and likewise whether a layer's input is already quantized,
``are_inputs_quantized_and_aligned``: otherwise a conv reading ``x[:, :c]`` gets a requantizer of its own), sizes (the arguments of a ``view``) are not asked about, everything
else is still Brevitas' own answer. The alternative, a
pass that flips quantizers to unsigned after Brevitas built them, would have to rebuild scaling modules
that Brevitas shares between aligned inputs.

**Zero padding.** timm's ``Conv2dSame`` becomes ``ZeroPad2d`` + ``Conv2d`` (``quant_capture``); Brevitas
does not count the pad among the modules that keep a tensor on its grid, so it requantized its output
before the conv: ``DQ -> Pad -> Q -> DQ -> Conv``, a Pad ONNX Runtime runs in float on the largest
activations of tf_efficientnet_lite0 (1.54x slower than ``quantize_static``'s file, whose FP32 export
had already folded the pads into the convs). Padding with zeros keeps every value on its grid (zero is on
every grid) and the sign; Brevitas' own ``F.pad`` handler already keeps the scale. With the pads in its
precision- and sign-preserving lists the export is ``DQ -> Pad -> Conv``, which
``onnx_folds.fold_pads_into_convs`` turns into ``DQ -> Conv`` with asymmetric ``pads``.

``brevitas_rules()`` sets both for the duration of one ``quantize()`` call (Brevitas reads these names
from its module at each call) and always restores the originals.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

# functions and methods whose output holds (part of) one input's values, unchanged
PIECE_FUNCTIONS = (torch.chunk, torch.split, torch.tensor_split, torch.unbind, torch.narrow)
PIECE_METHODS = ("chunk", "split", "tensor_split", "unbind", "narrow", "contiguous")
ZERO_PADS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d)
# modules that only move elements (QuantTensor has the method they call): sign and grid kept. Brevitas
# lists ``torch.flatten`` but not ``nn.Flatten``, so timm's heads (``self.flatten = nn.Flatten(1)``)
# requantized the pooled features before the classifier: one Q -> DQ ONNX Runtime runs in float
MOVES = (nn.Flatten,)
SHAPE_ARITHMETIC = (operator.getitem, operator.floordiv, operator.mul, operator.add, operator.sub,
                    operator.truediv)


def _is_slicing(index: Any) -> bool:
    """Whether ``index`` is tensor slicing syntax (``x[:, :c]``, ``x[..., 0]``), which a tuple's
    element (``pieces[0]``) never is."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, slice) or p is Ellipsis or p is None for p in parts)


def is_piece(node: Any) -> bool:
    """Whether ``node`` (a torch.fx node) yields values of its first input unchanged: a chunk, a split,
    ``.contiguous()``, a slice of a tensor (ghostnet's ``out[:, :c]``), or one element of the tuple a
    chunk or split returns."""
    if node.op == "call_function" and node.target is operator.getitem:
        if len(node.args) > 1 and _is_slicing(node.args[1]):
            return True
        return bool(node.args) and hasattr(node.args[0], "op") and is_piece(node.args[0])
    if node.op == "call_function":
        return node.target in PIECE_FUNCTIONS
    return node.op == "call_method" and node.target in PIECE_METHODS


def is_shape(node: Any) -> bool:
    """Whether ``node`` computes a size rather than a tensor (``x.size()``, ``x.shape`` and arithmetic on
    them): shufflenet's ``x.view(b, groups, c // groups, h, w)`` reads those beside ``x``, and Brevitas
    counts every input node of the view, so a size made its output "not unsigned"."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in ("shape", "ndim")
    if node.op == "call_function" and node.target in SHAPE_ARITHMETIC:
        return bool(node.all_input_nodes) and all(is_shape(n) for n in node.all_input_nodes)
    return False


def _tensor_input(node: Any) -> list[Any]:
    """The node a piece reads its values from (its first argument), as a one-element list."""
    first = node.args[0] if node.args else None
    return [first] if hasattr(first, "op") else []


def _following(original: Any, passes_on: Any, verdict: Any) -> Any:
    """A wrapper of one of Brevitas' input walks (``original(model, node, found, ...)``, which appends to
    ``found``): inputs that ``passes_on`` are asked about through the tensor they read, sizes are not asked
    about, the rest go to Brevitas' own rules; ``verdict(found)`` is the answer."""

    def walk(model: Any, node: Any, found: list, *rest: Any, **named: Any) -> bool:
        others = []
        for source in node.all_input_nodes:
            if is_shape(source):
                continue
            if passes_on(source):
                walk(model, SimpleNamespace(all_input_nodes=_tensor_input(source)), found, *rest, **named)
            else:
                others.append(source)
        if others:  # Brevitas' own rules; its recursion comes back here through the module attribute
            original(model, SimpleNamespace(all_input_nodes=others), found, *rest, **named)
        return verdict(found)

    return walk


def extended(original: Any) -> Any:
    """``original`` (Brevitas' ``are_inputs_unsigned``) with pieces followed back to their source and
    size computations not counted as inputs."""
    return _following(original, is_piece, all)


def passes_quant_tensors(node: Any) -> bool:
    """Whether ``node`` hands on a QuantTensor as it reads it: a slice of a tensor (``quant_getitem`` runs
    it), a chunk or split and its pieces (``quant_chunk`` / ``quant_split`` keep the grid on each), or
    ``.contiguous()``: a layer reading one reads a quantized input and needs no quantizer of its own."""
    if node.op == "call_function" and node.target is operator.getitem:
        if len(node.args) > 1 and _is_slicing(node.args[1]):
            return True
        source = node.args[0] if node.args else None  # one piece of a chunk or split (quant_chunk)
        return hasattr(source, "op") and source.op == "call_function" and source.target in (torch.chunk, torch.split)
    if node.op == "call_function" and node.target in (torch.chunk, torch.split):
        return True  # quant_chunk / quant_split keep the grid on each piece
    return node.op == "call_method" and node.target == "contiguous"


def extended_alignment(original: Any) -> Any:
    """``original`` (Brevitas' ``are_inputs_quantized_and_aligned``) with slices followed back to their
    source and sizes not counted: a conv reading a slice of a quantized concat (ghostnet's
    ``cat(...)[:, :c]``) reads a quantized input, and got a second, signed quantizer of its own otherwise
    (28 requantizers ONNX Runtime ran in float around the Slices of ghostnet_100)."""
    return _following(original, passes_quant_tensors, lambda found: None not in found and len(found) <= 1)


def through_pieces(original: Any) -> Any:
    """``original`` (Brevitas' ``recursive_input_handler``, which aligns each input of an add or concat
    onto one shared quantizer) with every piece that hands on its source's QuantTensor
    (``passes_quant_tensors``: chunk and split pieces, slices, ``.contiguous()``) followed back to the
    tensor it was cut from: the source is aligned, so its pieces need no requantizer (shufflenet's
    ``cat(x1, branch(x2))`` with ``x1, x2 = x.chunk(2)``: 13 requantizers ONNX Runtime ran in float, 1.4x
    quantize_static's latency; ghostnet's ``cat([x1, x2])[:, :c] + shortcut``: 16)."""

    def handler(model: Any, node: Any, *rest: Any, **named: Any) -> Any:
        inputs = []
        for source in node.all_input_nodes:
            cut_from = source
            while alignable_piece(cut_from) and _tensor_input(cut_from):
                cut_from = _tensor_input(cut_from)[0]
            # a tensor has one grid: when its pieces reach other joins too (rexnet's
            # ``cat([y[:, :c] + shortcut, y[:, c:]])``: the add and the concat), aligning it onto this
            # join's grid takes it from the other's, and Brevitas re-aligns the two until it gives up
            # (rexnet_100 fell back to layerwise, 1.51x quantize_static): the piece is requantized
            if cut_from is not source and joins_reading(cut_from) != {node}:
                cut_from = source
            if cut_from not in inputs:
                inputs.append(cut_from)
        return original(model, SimpleNamespace(all_input_nodes=inputs), *rest, **named)

    return handler


def alignable_piece(node: Any) -> bool:
    """A piece the residual alignment may follow to its source: ``passes_quant_tensors``, but not an
    index by a tensor (LeViT's ``attention_biases[:, idxs]``, a gather from a parameter): followed, the
    parameter got the attention add's quantizer, timm's levit_conv_128s exported 180 activation
    quantizers where its model called 191 (the export check could not compare them) and ran 1.86x
    quantize_static's latency."""
    if not passes_quant_tensors(node):
        return False
    if node.op == "call_function" and node.target is operator.getitem and len(node.args) > 1:
        parts = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        source = node.args[0]
        return not any(hasattr(p, "op") for p in parts) and getattr(source, "op", "") != "get_attr"
    return True


def joins_reading(source: Any) -> set[Any]:
    """The adds and concats that read ``source`` directly or through pieces of it (``passes_quant_tensors``)."""
    joins, todo, seen = set(), list(source.users), set()
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if passes_quant_tensors(user):
            todo.extend(user.users)
        elif is_join(user):
            joins.add(user)
    return joins


def residual_budget(graph: Any) -> int:
    """How many steps Brevitas' residual handler may take on ``graph``: each step aligns one add or
    concat, and a re-alignment undoes an earlier one, so a few times their number. Its own limit, 9 999,
    takes 5-6 minutes to reach on a model it cannot align (a ViT's residual stream, EfficientFormer)."""
    return 8 * sum(1 for n in graph.graph.nodes if is_join(n)) + 32


def is_join(node: Any) -> bool:
    """An add or concat: the nodes whose inputs Brevitas' residual handler aligns onto one grid."""
    return ((node.op == "call_function" and node.target in (operator.add, torch.add, torch.cat))
            or (node.op == "call_method" and node.target in ("add", "add_")))


def adds_unaligned_residual_handler(model: Any, quant_identity_map: dict, quant_act_map: dict,
                                    unsigned_act_tuple: tuple, align_input_quant_fn: Any) -> Any:
    """Brevitas' ``residual_handler`` with adds that only need *quantized* inputs, not one grid: each
    input of an add that reaches it in float gets a quantizer; concats are aligned as Brevitas aligns them.

    Brevitas aligns both inputs of every add onto one shared quantizer. Where one tensor is read by two
    joins whose alignments disagree, it re-aligns the two in turn until it gives up: timm's DLA feeds a
    tree's ReLU output to a residual add (beside a signed conv output) and to the root's concat (beside
    another ReLU output), and HGNetV2's aggregation does the same; both fell back to layerwise mode,
    every conv's output quantized *before* its ReLU, and ran 1.25x and 1.38x ``quantize_static``'s
    latency on ONNX Runtime (33 and 31 float Relus). No runtime edgekd exports for needs an add's
    inputs on one grid: ONNX Runtime's ``QLinearAdd``, OpenVINO's low-precision ``Add`` and TensorRT's
    fused residual add each take a scale per input (``quantize_static`` never aligns them). A concat's
    inputs stay aligned: that lets it pass its grid on to the next layer exactly."""
    from brevitas.graph import quantize_impl as impl

    def quantized(inputs: list, same_sign: bool) -> bool:
        return impl.are_inputs_quantized_and_aligned(model, SimpleNamespace(all_input_nodes=inputs), [],
                                                     quant_act_map, same_sign=same_sign)

    def aligned_one() -> bool:
        for node in model.graph.nodes:
            concat = node.op == "call_function" and node.target is torch.cat
            add = (node.op == "call_function" and node.target in impl.ADD_FNS) or \
                (node.op == "call_method" and node.target in impl.ADD_METHODS)
            if not (concat or add):
                continue
            inputs = list(node.all_input_nodes)
            if concat:
                todo = [] if quantized(inputs, same_sign=True) else inputs
            else:
                todo = [i for i in inputs if not quantized([i], same_sign=False)]
            if not todo:
                continue
            these = SimpleNamespace(all_input_nodes=todo, name=node.name)
            shared, shared_name = impl._get_quant_module(model, these, quant_identity_map, quant_act_map,
                                                         unsigned_act_tuple)
            rewriters: list = []
            impl.recursive_input_handler(model, node if len(todo) == len(inputs) else these, shared_name, shared,
                                         rewriters, quant_identity_map, align_input_quant_fn, align_sign=concat)
            for rewriter in rewriters:
                rewriter.apply(model)
            model.graph.lint()
            model.recompile()
            return True
        return False

    for _ in range(impl.MAX_RESIDUAL_ITERS):
        if not aligned_one():
            return model
    raise RuntimeError("Residual handler could not find a solution to align scale factors across ADDs and CATs")


@contextlib.contextmanager
def brevitas_rules(max_residual_iters: int | None = None, aligned_adds: bool = True) -> Iterator[None]:
    """Within this block, Brevitas' graph quantizer sees chunks, splits, slices and ``.contiguous()`` as
    keeping the sign and the quantization of what they read, and zero pads as keeping sign and grid (see
    the module docstring); ``max_residual_iters``: the residual handler's step limit (``residual_budget``);
    ``aligned_adds`` False: an add's inputs need not share a grid (``adds_unaligned_residual_handler``).
    The originals are always restored."""
    from brevitas.graph import quantize as graph_quantize
    from brevitas.graph import quantize_impl

    originals = {name: getattr(quantize_impl, name)
                 for name in ("are_inputs_unsigned", "are_inputs_quantized_and_aligned",
                              "PRECISION_PRESERVING_MODULES", "SIGN_PRESERVING_MODULES", "MAX_RESIDUAL_ITERS",
                              "recursive_input_handler")}
    original_handler = graph_quantize.residual_handler  # quantize() calls the name it imported
    if max_residual_iters is not None:
        quantize_impl.MAX_RESIDUAL_ITERS = max_residual_iters
    quantize_impl.are_inputs_unsigned = extended(originals["are_inputs_unsigned"])
    quantize_impl.are_inputs_quantized_and_aligned = extended_alignment(originals["are_inputs_quantized_and_aligned"])
    quantize_impl.recursive_input_handler = through_pieces(originals["recursive_input_handler"])
    quantize_impl.PRECISION_PRESERVING_MODULES = (*originals["PRECISION_PRESERVING_MODULES"], *ZERO_PADS, *MOVES)
    quantize_impl.SIGN_PRESERVING_MODULES = (*originals["SIGN_PRESERVING_MODULES"], *ZERO_PADS, *MOVES)
    if not aligned_adds:
        graph_quantize.residual_handler = adds_unaligned_residual_handler
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(quantize_impl, name, value)
        graph_quantize.residual_handler = original_handler


class _NoEqualization:
    """Stands in for Brevitas' ``EqualizeGraph`` where it would equalize nothing (0 iterations)."""

    def __init__(self, real: type, iterations: int = 10, **options: Any) -> None:
        self.real = real(iterations=iterations, **options) if iterations else None

    def apply(self, graph_model: Any) -> Any:
        return graph_model if self.real is None else self.real.apply(graph_model)


@contextlib.contextmanager
def equalization_skipped_when_off() -> Iterator[None]:
    """Within this block Brevitas' ``preprocess_for_quantize`` skips weight equalization when asked for
    0 iterations (edgekd's setting). With 0 iterations ``EqualizeGraph`` changes no weight, but still walks
    the graph for regions, and that walk crashes on a concat that feeds another concat and has an input
    it cannot size (``int += object`` in ``find_srcs_channel_dim``: timm's rexnet, whose channel
    bookkeeping concatenates a slice). The original is always restored."""
    from brevitas.graph import quantize as graph_quantize

    original = graph_quantize.EqualizeGraph
    graph_quantize.EqualizeGraph = lambda **options: _NoEqualization(original, **options)
    try:
        yield
    finally:
        graph_quantize.EqualizeGraph = original
