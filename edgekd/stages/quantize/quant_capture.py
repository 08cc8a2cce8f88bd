"""Capturing a model as a torch.fx graph Brevitas can quantize whole: plain layers, tracing, attention.

Brevitas quantizes what it recognises by exact class in a traced graph. Checkpoints people have carry
layers it does not recognise (timm's ``Conv2dSame`` and ``BatchNormAct2d``), control flow on tensor
shapes that symbolic tracing cannot follow (timm's ViT), and attention written as one
``F.scaled_dot_product_attention`` call whose two matmuls no layer map reaches. This module turns
each into what Brevitas and the runtimes' INT8 fusions know, checking numerically that the model
still computes the same thing at the exported shape.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import operator
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import StageError, first_line

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
PLAIN_NORMS = (nn.BatchNorm2d,)  # subclasses are made plain so that BatchNorm merges into the conv
# Brevitas' default turns ReLU6 into ReLU before quantizing, which changes the float model wherever an
# activation exceeds 6: timm's tf_efficientnet_lite0 (random init, 224x224) went to -9.6 dB SQNR against
# itself before any quantizer. Kept: Brevitas then quantizes ReLU6 over its exact range [0, 6].
RELU6_TO_RELU = False


def first_calls(model: nn.Module, example: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, dict[str, Any]]:
    """The arguments (parameter name -> value) each of ``modules`` (by name) gets on its first call when
    ``model`` runs on ``example``; modules the forward does not call are absent."""
    calls: dict[str, dict[str, Any]] = {}

    def record(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if name in calls:  # (a pre-hook that returned a value would replace the input)
            return
        try:
            bound = inspect.signature(module.forward).bind(*args, **kwargs).arguments
        except TypeError:
            return
        calls[name] = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in bound.items()}

    hooks = [m.register_forward_pre_hook(lambda module, args, kwargs, name=name: record(name, module, args, kwargs),
                                         with_kwargs=True)
             for name, m in modules.items()]
    try:
        with torch.no_grad():
            model(example.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def constant_layers(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Conv/linear layers whose input does not depend on the model's input (name -> why): run on ``example``
    and on another input of its shape, they read the same tensor (Swin V2's position-bias MLP reads a
    buffer of coordinates). Such a layer computes a constant the runtimes fold; quantized, it has no
    quantized input to scale its bias by (Brevitas: "QuantLayer is not correctly configured"). They stay
    float."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}
    other = torch.rand(example.shape, generator=torch.Generator().manual_seed(7)).to(example) \
        if example.is_floating_point() else example
    if other is example:
        return {}
    first, second = first_calls(model, example, layers), first_calls(model, other, layers)
    return {name: "its input does not depend on the model's input: a constant the runtimes fold"
            for name, call in first.items()
            if (a := _first_tensor(call)) is not None and (b := _first_tensor(second.get(name, {}))) is not None
            and a.shape == b.shape and torch.equal(a, b)}


def _first_tensor(arguments: dict[str, Any]) -> torch.Tensor | None:
    return next((v for v in arguments.values() if isinstance(v, torch.Tensor)), None)


def plain_layers(model: nn.Module, example: torch.Tensor, markers: tuple[type, ...] = ()) -> dict[str, str]:
    """Make every conv/linear/BatchNorm a plain torch layer that Brevitas' layer maps know; returns the
    layers that could not be made so (name -> why), which then stay in float.

    Brevitas picks a layer's quantized replacement by its exact class, so a subclass is never quantized,
    and one whose forward() pads from the input's shape (timm's ``Conv2dSame``, EfficientNet-PyTorch's
    dynamic-padding convs) also breaks symbolic tracing. A subclass that keeps its base's forward() only
    changes class, and so does one whose own forward() computes its base's output at the ``example``'s
    shape (timm's ``Linear``); any other is replaced, when at that shape it computes the same output, by
    ``ZeroPad2d(p) + conv`` (p = 0 or TensorFlow's "SAME" padding; the exported file
    has a fixed shape, so the padding is fixed too) or, for a norm, by ``norm + its children`` (timm's
    ``BatchNormAct2d``: norm, drop, act). ``markers``: edgekd's own subclasses, left alone.
    """
    plain = QUANTIZABLE + PLAIN_NORMS
    subclassed = {name: m for name, m in model.named_modules()
                  if isinstance(m, plain) and type(m) not in plain and type(m) not in markers}
    inputs = {name: x for name, call in first_calls(model, example, subclassed).items()
              if (x := _first_tensor(call)) is not None}
    kept: dict[str, str] = {}
    for name, layer in subclassed.items():
        base = next(c for c in type(layer).__mro__ if c in plain)
        if type(layer).forward is base.forward:
            layer.__class__ = base
            continue
        if name in inputs and _base_computes_it(layer, base, inputs[name]):
            continue  # its forward is its base's in other words (timm's Linear casts dtypes for TorchScript)
        replacement = None
        if name in inputs:
            maker = _norm_then_children if base in PLAIN_NORMS else _padded_conv
            replacement = maker(layer, base, inputs[name])
        if replacement is None:
            kept[name] = f"{type(layer).__name__} has its own forward(), not a padded {base.__name__}"
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, replacement)
    return kept


def _base_computes_it(layer: nn.Module, base: type, x: torch.Tensor) -> bool:
    """Make ``layer`` an instance of ``base`` if, at ``x``, its base's forward() gives its own output;
    otherwise leave it as it was. Whether a forward() is the base's in other words is a question about
    its outputs, not its source: asked of every subclass, not of a list of known ones."""
    own = type(layer)
    with torch.no_grad():
        want = layer(x)
    layer.__class__ = base
    try:
        if _same_output(layer, want, x):
            return True
    except RuntimeError:  # the base cannot run there at all (a "SAME" conv's kernel larger than its input)
        pass
    layer.__class__ = own
    return False


def _same_output(candidate: nn.Module, want: torch.Tensor, x: torch.Tensor) -> bool:
    with torch.no_grad():
        got = candidate.eval()(x)
    return got.shape == want.shape and torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def _norm_then_children(layer: nn.Module, base: type, x: torch.Tensor) -> nn.Module | None:
    """``base`` norm + ``layer``'s child modules in order, if that computes ``layer(x)``, else None.
    The plain norm then merges into the conv before it."""
    norm = base(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats,
                device=x.device)
    norm.load_state_dict({k: v for k, v in layer.state_dict().items() if "." not in k})
    # an nn.Identity child (timm's disabled drop) would sit between the conv and its activation, and
    # Brevitas then requantizes the conv's output before the activation quantizes it again: 32 extra
    # Q/DQ pairs in tf_efficientnet_lite0, 2.5x slower than quantize_static on ORT
    candidate = nn.Sequential(norm, *[c for c in layer.children() if not isinstance(c, nn.Identity)])
    with torch.no_grad():
        want = layer(x)
    return candidate if _same_output(candidate, want, x) else None


def _padded_conv(layer: nn.Module, base: type, x: torch.Tensor) -> nn.Module | None:
    """``ZeroPad(p) + base conv`` with ``layer``'s weights if it computes ``layer(x)``, else None."""
    if base is not nn.Conv2d:
        return None
    with torch.no_grad():
        want = layer(x)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ih, iw = x.shape[-2:]

    def same(size: int, k: int, s: int, d: int) -> int:
        return max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)

    ph, pw = same(ih, kh, sh, dh), same(iw, kw, sw, dw)
    for pad in ((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), (0, 0, 0, 0)):
        conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode,
                         device=layer.weight.device)
        conv.weight, conv.bias = layer.weight, layer.bias
        candidate = nn.Sequential(nn.ZeroPad2d(pad), conv) if any(pad) else conv
        if _same_output(candidate, want, x):
            return candidate
    return None


def canonical_means(graph: Any) -> Any:
    """Every ``x.mean(...)`` node of a traced ``graph`` written one way: ``x.mean(dims)`` or
    ``x.mean(dims, keepdim=True)``.

    Brevitas' preprocessing turns ``x.mean((2, 3))`` into an AdaptiveAvgPool2d and a reshape, but it reads
    only one spelling of the call: an explicit ``keepdim=False`` (timm's RepViT head) is passed on to the
    pool's forward() (a TypeError), a positional ``keepdim`` is dropped (``x.mean((2, 3), True)`` loses its
    kept dimensions) and ``dim=`` as a keyword is mangled. Spelled canonically, every form either becomes
    the pool it means or (keepdim=True) stays a mean.
    """
    for node in graph.graph.nodes:
        if node.op != "call_method" or node.target != "mean":
            continue
        args, kwargs = list(node.args), dict(node.kwargs)
        this = kwargs.pop("self") if "self" in kwargs else args.pop(0)
        dims = kwargs.pop("dim", args.pop(0) if args else None)
        keepdim = kwargs.pop("keepdim", args.pop(0) if args else False)
        if args or dims is None:  # a dtype, or a full reduction: not Brevitas' pattern, left as written
            continue
        node.args = (this, dims)
        node.kwargs = {**kwargs, **({"keepdim": True} if keepdim else {})}
    graph.recompile()
    return graph


def _activation_spellings() -> dict[type[nn.Module], tuple[tuple[Any, ...], tuple[str, ...]]]:
    """Module class -> (functions, tensor methods) that compute the same activation: the spellings
    Brevitas' layer maps do not read (its preprocessing turns ``F.relu``/``F.relu6``/``F.hardtanh`` into
    modules, and no method at all). Written down as data: a new spelling is one more entry."""
    return {
        nn.Sigmoid: ((torch.sigmoid, torch.sigmoid_, F.sigmoid, torch.special.expit), ("sigmoid", "sigmoid_")),
        nn.ReLU: ((torch.relu, torch.relu_), ("relu", "relu_")),
        nn.SiLU: ((F.silu,), ()),
        nn.Hardswish: ((F.hardswish,), ()),
        nn.Hardsigmoid: ((F.hardsigmoid,), ()),
        nn.GELU: ((F.gelu,), ()),
        nn.Tanh: ((torch.tanh, torch.tanh_, F.tanh), ("tanh", "tanh_")),
    }


def canonical_activations(graph: Any) -> Any:
    """Every activation a traced ``graph`` computes by a function or a tensor method (timm's ``Sigmoid``
    module runs ``x.sigmoid()``, a squeeze-excite gate ``torch.sigmoid(s)``) made a call of its module.

    Brevitas quantizes activations it finds as modules (``nn.Sigmoid`` gets an unsigned quantizer after
    it); the same activation spelled as a call stays float, and a runtime then cannot run the ops around
    it in INT8 (regnety_002's 13 gates: ``Sigmoid -> Mul`` float on ONNX Runtime where ``quantize_static``
    runs QLinearSigmoid and QLinearMul). Uses Brevitas' own rewriters (``FnToModule``/``MethodToModule``);
    a call with extra positional arguments the module cannot take is left as written.
    """
    from brevitas.graph.base import FnToModule, MethodToModule

    for module_class, (functions, methods) in _activation_spellings().items():
        for node in list(graph.graph.nodes):
            matched = (node.op == "call_function" and any(node.target is f for f in functions)) or \
                      (node.op == "call_method" and node.target in methods)
            if not matched or len(node.args) != 1 or node.name in dict(graph.named_modules()):
                continue
            rewriter = FnToModule(node.target, module_class) if node.op == "call_function" else \
                MethodToModule(node.target, module_class)
            kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}  # a module's copy needs no in-place
            node.kwargs = kwargs
            rewriter.rewrite_node(node, graph)
            # the signature Brevitas resolves for a builtin (torch.sigmoid) adds its defaults, ``out=None``
            node.kwargs = {k: v for k, v in node.kwargs.items() if v is not None}
    graph.recompile()
    return graph


def _graph_inputs(node: Any) -> list[Any]:
    """The nodes ``node`` reads (torch.fx's Nodes or Brevitas' backported ones), in tuples too."""
    flat = [a for arg in (*node.args, *node.kwargs.values()) for a in (arg if isinstance(arg, (tuple, list)) else (arg,))]
    return [a for a in flat if hasattr(a, "op") and hasattr(a, "users")]


def shape_quantizers_removed(graph: Any) -> int:
    """Remove every quantizer Brevitas put on a number read off a tensor shape in a quantized fx ``graph``.

    Brevitas treats every value its graph passes reach as an activation: aligning a residual add's inputs
    walks through a ``view``/``reshape`` to *all* of its inputs, the ``B, C, H, W`` read off ``x.shape``
    included, and ``H + pad`` is taken for a residual add. On such numbers (timm's EfficientViT-M, Swin) the
    quantizer receives a Python int and calibration fails ("'int' object has no attribute 'reshape'"). A
    value is a shape value when it is read by ``.size()``/``.dim()`` or the ``shape``/``ndim`` attribute, or
    computed by the ``operator`` module from shape values and constants; a quantizer call on one is dropped
    (its readers read the number again), and so is one on an argument the trace fixed at its default
    (a Python bool, ``traced``). Done after Brevitas, not by hiding the reshape from it: the walk
    through a reshape is also how it finds that a channel shuffle's Concat reads unsigned ReLUs
    (shufflenet_v2 fell from 57 to 44 INT8 layers on ORT when the reshape was hidden). Returns how many.
    """
    import brevitas.nn as qnn

    shapes: set[Any] = set()
    removed = 0
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    # the arguments ``traced`` fixed at their defaults (``pre_logits=False``) are constants too
    shapes.update(n for n in placeholders[1:] if n.args)
    for node in list(graph.graph.nodes):
        inputs = _graph_inputs(node)
        if node.op == "call_module" and inputs and inputs[0] in shapes and isinstance(
                graph.get_submodule(node.target), (qnn.QuantIdentity, qnn.QuantReLU)):
            node.replace_all_uses_with(inputs[0])
            graph.graph.erase_node(node)
            removed += 1
        elif ((node.op == "call_method" and node.target in ("size", "dim")) or
              (node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim")) or
              (node.op == "call_function" and getattr(node.target, "__module__", None) == "_operator" and
               bool(inputs) and all(a in shapes for a in inputs))):
            shapes.add(node)
    if removed:
        graph.recompile()
    return removed


_MULS = ("mul", "mul_")


def _constant(graph: Any, value: Any) -> torch.Tensor | None:
    """The value of a traced expression that reads only parameters and buffers (``self.gamma.view(1, -1,
    1, 1)``) or a number, as a tensor; None when it reads an input or a layer's output."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    if not hasattr(value, "op"):
        return None
    args = [_constant(graph, a) if hasattr(a, "op") else a for a in value.args]
    if any(a is None for a, raw in zip(args, value.args) if hasattr(raw, "op")):
        return None
    if value.op == "get_attr":
        found = graph
        for part in value.target.split("."):
            found = getattr(found, part)
        return found.detach() if isinstance(found, torch.Tensor) else None
    if value.op == "call_method" and args and isinstance(args[0], torch.Tensor):
        return getattr(args[0], value.target)(*args[1:], **value.kwargs)
    if value.op == "call_function" and value.target in (operator.mul, operator.neg, torch.reshape, torch.unsqueeze):
        return value.target(*args, **value.kwargs)
    return None


def _per_output_channel(scale: torch.Tensor, layer: nn.Module) -> torch.Tensor | None:
    """``scale`` as one factor per output channel of ``layer`` when multiplying the layer's output by it
    scales whole channels and keeps its shape; None otherwise. A conv's output has its weight's rank with
    channels on axis 1; a linear's, channels last at a rank the layer does not fix, so only a scalar or a
    ``[C]`` vector is sure to broadcast without adding axes."""
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if scale.numel() == 1 and scale.dim() <= (1 if isinstance(layer, nn.Linear) else layer.weight.dim()):
        return scale.reshape(1).expand(channels).clone()
    if scale.numel() != channels:
        return None
    if isinstance(layer, nn.Linear):
        return scale.reshape(-1) if scale.dim() == 1 else None
    rank = layer.weight.dim()
    if scale.dim() > rank:
        return None
    shape = [1] * (rank - scale.dim()) + list(scale.shape)  # broadcasting aligns on the right
    return scale.reshape(-1) if shape[1] == channels else None


IDENTITIES_AT_INFERENCE = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _through_identities(node: Any, modules: dict[str, nn.Module]) -> Any:
    """The node ``node`` passes on unchanged at inference, through dropouts and identities that have no
    other reader (timm's ``mlp -> drop -> layer_scale``)."""
    while (getattr(node, "op", None) == "call_module" and isinstance(modules.get(node.target), IDENTITIES_AT_INFERENCE)
           and node.args and hasattr(node.args[0], "op") and len(node.args[0].users) == 1):
        node = node.args[0]
    return node


def constant_scales_folded(graph: Any) -> int:
    """Fold every multiplication of a conv's or linear's output by a per-channel constant (timm's
    ``LayerScale``: ``x * gamma``, ``x.mul_(gamma.view(1, -1, 1, 1))``) into that layer's weight and bias,
    where the layer's output has no other reader (dropouts and identities between them are looked through:
    the model is in eval mode). Exact in float, like BatchNorm merging; left in the
    graph, the multiplication runs in float between a DequantizeLinear and a QuantizeLinear on ONNX
    Runtime (FastViT, EdgeNeXt) and costs a requantizer elsewhere. Returns how many were folded."""
    modules = dict(graph.named_modules())
    folded = 0
    for node in list(graph.graph.nodes):
        is_mul = ((node.op == "call_function" and node.target in (operator.mul, torch.mul)) or
                  (node.op == "call_method" and node.target in _MULS))
        if not is_mul or len(node.args) != 2 or node.kwargs:
            continue
        for read, other in (node.args, node.args[::-1]):
            layer_node = _through_identities(read, modules)
            layer = modules.get(layer_node.target) if getattr(layer_node, "op", None) == "call_module" else None
            if not isinstance(layer, QUANTIZABLE) or len(layer_node.users) != 1 or len(read.users) != 1:
                continue
            scale = _constant(graph, other)
            factor = None if scale is None else _per_output_channel(scale.float(), layer)
            if factor is None:
                continue
            with torch.no_grad():
                layer.weight.mul_(factor.to(layer.weight).reshape(-1, *[1] * (layer.weight.dim() - 1)))
                if layer.bias is not None:
                    layer.bias.mul_(factor.to(layer.bias))
            node.replace_all_uses_with(read)
            graph.graph.erase_node(node)
            folded += 1
            break
    if folded:
        graph.graph.eliminate_dead_code()
        graph.recompile()
    return folded


def _canonical(graph: Any) -> Any:
    """``graph`` with every mean and activation spelled as Brevitas reads them, and its divisors float."""
    graph = canonical_activations(canonical_means(graph))
    divisors_in_float(graph)
    return graph


DIVISIONS = (operator.truediv, torch.div, torch.true_divide)
ADDS = (operator.add, operator.iadd, torch.add)


def add_constant(a: Any, b: Any) -> Any:
    """``a + b`` on the float values, where one of them is a number: an add Brevitas does not see."""
    return plain_value(a) + plain_value(b)


def _constant_add_operand(node: Any) -> Any | None:
    """The one traced operand of ``node`` if it adds a number to it (``x + eps``), else None."""
    is_add = (node.op == "call_function" and node.target in ADDS
              or node.op == "call_method" and node.target in ("add", "add_"))
    if not is_add or node.kwargs or len(node.args) != 2:
        return None
    traced = [a for a in node.args if hasattr(a, "op")]
    return traced[0] if len(traced) == 1 and isinstance(node.args[1 - node.args.index(traced[0])], (int, float)) else None


def divisors_in_float(graph: Any) -> int:
    """Keep every divisor's ``x + eps`` out of Brevitas' hands: it takes any add for a residual, gives the
    tensor operand a quantizer and the sum another, and a divisor on an 8-bit grid turns its small values
    into zeros. EfficientViT's linear attention, ``out[..., :-1] / (out[..., -1:] + eps)``, then divided
    0 by 0 wherever a ReLU'd query row was zero: NaN and inf in the fake-quant model itself, which no file
    can match ("diverges at MatMul_1"). The division's output is quantized by whatever reads it next.
    Returns how many adds were rewritten."""
    done = 0
    for node in list(graph.graph.nodes):
        divides = (node.op == "call_function" and node.target in DIVISIONS
                   or node.op == "call_method" and node.target in ("div", "true_divide"))
        divisor = node.args[1] if divides and len(node.args) > 1 else None
        while hasattr(divisor, "op") and (operand := _constant_add_operand(divisor)) is not None:
            divisor.op, divisor.target = "call_function", add_constant
            done += 1
            divisor = operand
    graph.recompile()
    return done


class Untraceable(StageError):
    """torch.fx cannot capture the module as a graph (Python control flow on traced values)."""


def traced_parts(model: nn.Module, example: torch.Tensor | None) -> dict[str, nn.Module]:
    """``traced`` graphs of the largest submodules of ``model`` that torch.fx can trace, by qualified
    name (``{"": graph}`` when the whole model traces).

    A model whose forward() computes with a traced value in Python (MobileViT's ``math.ceil(H / patch)``,
    EfficientViT's autocast on ``v.device.type``, ``int(math.sqrt(tokens))``) cannot be one graph; its forward() then
    stays Python, and each child is captured alone, recursively, so only the code that branches runs in
    float between quantized parts. A child is traced with the input it receives when ``model`` runs on
    ``example`` (the value tracer needs it); children the forward does not reach are left alone."""
    parts: dict[str, nn.Module] = {}
    calls: dict[str, dict[str, Any]] = {}  # recorded only once the whole model has failed to trace

    def capture(name: str, module: nn.Module) -> Untraceable | None:
        """Trace ``module`` whole, else its children; its own tracing error, if any."""
        try:
            call = calls.get(name, {}) if name else {}
            fixed = {k: v for k, v in call.items() if not isinstance(v, torch.Tensor)}  # as the caller passes them
            if next(module.children(), None) is None:  # a lone layer traced as the root would be its F.conv2d
                module, fixed = nn.Sequential(module), {}
            parts[name] = traced(module, _first_tensor(call) if name else example, fixed)
            return None
        except Untraceable as exc:
            if not name and example is not None:
                calls.update(first_calls(model, example, dict(model.named_modules())))
            for child, sub in module.named_children():
                qualified = f"{name}.{child}" if name else child
                if example is None or any(n == qualified or n.startswith(f"{qualified}.") for n in calls):
                    capture(qualified, sub)  # called, or holds called modules (a ModuleList)
            return exc

    whole_error = capture("", model)
    if not parts and whole_error is not None:
        raise whole_error
    return parts


def traced(model: nn.Module, example: torch.Tensor | None, fixed: dict[str, Any] | None = None) -> nn.Module:
    """Brevitas' preprocessing (BatchNorm merged, functional calls made modules) on a torch.fx graph of
    ``model`` (its means and activations spelled as Brevitas reads them, ``_canonical``): symbolic
    tracing, or, where the model's control flow reads tensor shapes (timm's ViT position embeddings),
    Brevitas' value tracer, which records the shapes of ``example`` as constants. Arguments after the
    first that are not tensors are constants of the graph: their defaults, or the values in ``fixed`` (a
    part's, as its caller passes them: torchvision's ``self_attention(x, x, x, need_weights=False)``)."""
    from brevitas.fx import symbolic_trace, value_trace
    from brevitas.graph.quantize import preprocess_for_quantize

    from .brevitas_rules import equalization_skipped_when_off

    parameters = list(inspect.signature(model.forward).parameters.values())
    # arguments a caller leaves at their defaults (timm's ``head(x, pre_logits=False)``) are constants of
    # the graph, not inputs Brevitas would put a quantizer on
    defaults = {**{p.name: p.default for p in parameters[1:] if p.default is not inspect.Parameter.empty
                   and not isinstance(p.default, torch.Tensor)}, **(fixed or {})} or None
    names = [p.name if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) else "" for p in parameters]
    tracers = [lambda: symbolic_trace(model, concrete_args=defaults)]
    if example is not None and parameters:
        tracers.append(lambda: value_trace(model, concrete_args=defaults, value_args={parameters[0].name: example}))
    graph, trace_error, prepare_error = None, None, None
    with warnings.catch_warnings():  # torch.fx deprecation noise from Brevitas' tracer backport
        warnings.simplefilter("ignore", FutureWarning)
        for trace in tracers:
            try:
                with _autocast_as_no_op():
                    captured = trace()
            except Exception as exc:  # noqa: BLE001 - torch.fx raises many types on untraceable models
                trace_error = trace_error or exc  # the symbolic tracer's error names the cause
                continue
            try:
                with equalization_skipped_when_off():
                    graph = preprocess_for_quantize(_canonical(_specialization_checks_dropped(captured, names)),
                                                    trace_model=False, relu6_to_relu=RELU6_TO_RELU)
                break
            except Exception as exc:  # noqa: BLE001 - Brevitas' graph passes raise plain errors
                prepare_error = prepare_error or exc
    if graph is None and prepare_error is not None:
        raise StageError(f"quantize: Brevitas could not prepare the traced model for quantization "
                         f"({first_line(prepare_error, with_type=True)})")
    if graph is None:
        raise Untraceable(f"quantize: the model cannot be traced by torch.fx for quantization ({trace_error})")
    constant_scales_folded(graph)  # after BatchNorm merging: conv -> BN -> x * gamma is conv -> x * gamma
    return graph


class _NoAutocast:
    """``torch.autocast`` while tracing: accepts any arguments, changes nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _NoAutocast:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


@contextlib.contextmanager
def _autocast_as_no_op() -> Iterator[None]:
    """Within this block ``torch.autocast`` is a no-op. A traced graph never holds autocast (torch.fx runs
    a context manager while tracing and records none of it), but its arguments are read while tracing:
    EfficientViT's ``torch.autocast(device_type=v.device.type, enabled=False)`` around its attention gave
    torch.fx a proxy where a string belongs, and the whole model failed to trace (its attention matmuls
    then stayed float, 51 of 60 layers INT8). The original is always restored."""
    originals = (torch.autocast, torch.amp.autocast)
    torch.autocast = torch.amp.autocast = _NoAutocast
    try:
        yield
    finally:
        torch.autocast, torch.amp.autocast = originals


def _specialization_checks_dropped(graph: Any, names: list[str]) -> Any:
    """``graph`` without the checks torch.fx adds for each argument a trace fixed (``concrete_args``):
    ``_assert(eq(pre_logits, False))`` compares a Python value, which the TorchScript ONNX exporter has no
    op for. A fixed argument is a later placeholder with a default; checks the model makes itself stay.
    torch.fx also renames a fixed argument (``pre_logits_1``); it gets its name back from ``names`` (the
    forward's parameters), so a caller passing it by keyword still can."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, names):
        if not node.target.startswith("*") and name:  # *args and **kwargs keep theirs
            node.target = name
    fixed = {n for n in placeholders[1:] if n.args}
    for node in list(graph.graph.nodes):
        condition = node.args[0] if node.op == "call_function" and node.target is torch._assert else None
        if condition is not None and hasattr(condition, "all_input_nodes") and fixed & set(condition.all_input_nodes):
            graph.graph.erase_node(node)
            if not condition.users:
                graph.graph.erase_node(condition)
    graph.recompile()
    return graph


def _default_of(value: Any) -> Any:
    """A traced argument's value where the trace fixes it: a forward() parameter left at its default
    (timm passes ``attn_mask``/``is_causal`` through from its own defaults) is that default."""
    if getattr(value, "op", None) == "placeholder":  # torch.fx's Node or Brevitas' backported one
        return value.args[0] if value.args else value
    return value


class QuantAttention(nn.Module):
    """``softmax(q k^T * scale) v`` with INT8 inputs to both matmuls (the probabilities unsigned), the
    form ORT fuses into ``QLinearMatMul``/``MatMulIntegerToFloat`` and OpenVINO runs in INT8."""

    def __init__(self, signed_act: type, unsigned_act: type, scale: float | None) -> None:
        import brevitas.nn as qnn

        super().__init__()
        self.scale = scale
        self.q_quant = qnn.QuantIdentity(act_quant=signed_act)
        self.k_quant = qnn.QuantIdentity(act_quant=signed_act)
        self.v_quant = qnn.QuantIdentity(act_quant=signed_act)
        self.attn_quant = qnn.QuantIdentity(act_quant=unsigned_act)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5 if self.scale is None else self.scale
        scores = self.q_quant(q * scale) @ self.k_quant(k.transpose(-2, -1))
        if attn_mask is not None:  # as F.scaled_dot_product_attention reads it: True keeps, a float adds
            scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                      else scores + attn_mask)
        return self.attn_quant(torch.softmax(scores, dim=-1)) @ self.v_quant(v)


def quantizable_attention(graph: Any, signed_act: type, unsigned_act: type) -> int:
    """Replace each ``F.scaled_dot_product_attention`` call that is not causal and has no dropout in
    ``graph`` by a ``QuantAttention``, its mask (TinyViT's attention biases) passed on; returns how many.
    Causal calls and those with dropout keep their float matmuls."""
    done = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
            continue
        extra = {k: _default_of(v) for k, v in
                 {**dict(zip(("attn_mask", "dropout_p", "is_causal"), node.args[3:])), **node.kwargs}.items()}
        if extra.get("dropout_p", 0.0) or extra.get("is_causal", False):
            continue
        name = f"attention_{done}"
        graph.add_submodule(name, QuantAttention(signed_act, unsigned_act, extra.get("scale")))
        mask = extra.get("attn_mask")
        with graph.graph.inserting_after(node):
            new = graph.graph.call_module(name, (*node.args[:3], *([] if mask is None else [mask])))
        node.replace_all_uses_with(new)
        graph.graph.erase_node(node)
        done += 1
    graph.recompile()
    return done



def chunks_as_functions(graph: Any) -> int:
    """``x.chunk(...)`` method calls as ``torch.chunk(x, ...)``: Brevitas' quantized tensors have no
    ``chunk`` method (shufflenet failed with "'IntQuantTensor' object has no attribute 'chunk'"); the
    function becomes ``quant_chunk`` after quantization, whose pieces keep the grid they were cut from.
    Returns how many were rewritten."""
    done = 0
    for node in list(graph.graph.nodes):
        if node.op == "call_method" and node.target == "chunk":
            with graph.graph.inserting_after(node):
                new = graph.graph.call_function(torch.chunk, node.args, node.kwargs)
            node.replace_all_uses_with(new)
            graph.graph.erase_node(node)
            done += 1
    graph.recompile()
    return done


def drop_identities(graph: Any) -> int:
    """Remove ``nn.Identity`` calls (timm's disabled drop, anti-aliasing and SE slots) from ``graph``:
    between a conv and its activation one makes Brevitas requantize the conv's output before the
    activation quantizes it again, an extra Q/DQ pair per block that ORT runs as such. Returns how many."""
    done = 0
    for node in list(graph.graph.nodes):
        if node.op == "call_module" and type(graph.get_submodule(node.target)) is nn.Identity and node.args:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
            done += 1
    if done:
        graph.graph.lint()
        graph.recompile()
    return done


def quant_getitem(x: Any, index: Any) -> Any:
    """``x[index]`` that also slices a QuantTensor: Brevitas' QuantTensor is a NamedTuple, so plain
    indexing picks its *fields* (``x[0]`` is the value, ``x[:, :4]`` raises), which broke ghostnet's
    ``out[:, :self.out_chs]``. A slice keeps a per-tensor grid, so the result stays quantized."""
    from brevitas.quant_tensor import QuantTensor

    if not isinstance(x, QuantTensor):
        return x[index]
    value = x.value[index]
    if x.scale.numel() == 1 and x.zero_point.numel() == 1:
        return x._replace(value=value)
    return value


def _quant_pieces(pieces: Any, x: Any) -> Any:
    """``pieces`` (a chunk or split of ``x``'s values) as QuantTensors on ``x``'s grid when it has one
    per-tensor grid: a piece keeps its source's grid, as a slice does (``quant_getitem``)."""
    from brevitas.quant_tensor import QuantTensor

    if not isinstance(x, QuantTensor) or x.scale.numel() != 1 or x.zero_point.numel() != 1:
        return pieces
    return tuple(x._replace(value=piece) for piece in pieces)


def quant_chunk(x: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.chunk`` that keeps a QuantTensor's grid on each piece (shufflenet's ``x.chunk(2, dim=1)``:
    float pieces were each requantized, one onto a signed grid, 26 float Slices on ONNX Runtime)."""
    return _quant_pieces(torch.chunk(plain_value(x), *args, **kwargs), x)


def quant_split(x: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.split`` that keeps a QuantTensor's grid on each piece (see ``quant_chunk``)."""
    return _quant_pieces(torch.split(plain_value(x), *args, **kwargs), x)


def plain_value(x: Any) -> Any:
    """The float value of a QuantTensor (anything else unchanged), for tensor methods it lacks."""
    from brevitas.quant_tensor import QuantTensor

    return x.value if isinstance(x, QuantTensor) else x


def float_sub(a: Any, b: Any) -> Any:
    """``a - b`` on the float values: Brevitas aligns the grids of an add's operands, not a subtraction's,
    and refuses two QuantTensors on different grids ("Scaling factors are different": timm's FastViT
    RepMixer ``mixer(x) - norm(x)``). The difference is requantized by whatever reads it next."""
    return plain_value(a) - plain_value(b)


def quant_add(a: Any, b: Any) -> Any:
    """``a + b``: Brevitas' QuantTensor sum where both operands are on one grid (its aligned adds), the
    float values where they are not. Brevitas refuses two QuantTensors on different grids ("Scaling
    factors are different"), and in training mode adds them under the mean of their scales, which a
    layer's bias quantizer would then read as its input's scale. An add whose operands keep grids of their
    own (``adds_unaligned_residual_handler``) yields a float value that its reader quantizes."""
    from brevitas.quant_tensor import QuantTensor

    if isinstance(a, QuantTensor) and isinstance(b, QuantTensor):
        same = all(torch.allclose(torch.as_tensor(x).float(), torch.as_tensor(y).float())
                   for x, y in ((a.scale, b.scale), (a.zero_point, b.zero_point)))
        if not same:
            return a.value + b.value
    return a + b



def quant_tensor_safe(graph: Any) -> int:
    """Make a quantized fx graph run on QuantTensors whatever tensor code it holds: every ``[...]``
    goes through ``quant_getitem``, every ``a - b`` through ``float_sub``, every ``a + b`` through
    ``quant_add``, and a method or attribute QuantTensor does not have (``.mean`` in lcnet's
    squeeze-excite, ``.sum``, ``.max``; ``.dtype`` in timm's EfficientViT attention at 224) is read from ``plain_value`` of its receiver, the float values
    the method would have read (the next quantized layer quantizes its input, as Brevitas placed it).
    Returns how many nodes changed."""
    from brevitas.quant_tensor import IntQuantTensor

    changed = 0
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is operator.getitem:
            node.target = quant_getitem
            changed += 1
        elif node.op == "call_function" and node.target in (torch.chunk, torch.split):
            node.target = quant_chunk if node.target is torch.chunk else quant_split
            changed += 1
        elif node.op == "call_function" and node.target in (operator.sub, torch.sub) and not node.kwargs:
            node.target = float_sub
            changed += 1
        elif node.op == "call_function" and node.target in ADDS and not node.kwargs and len(node.args) == 2:
            node.target = quant_add
            changed += 1
        elif ((node.op == "call_method" and node.args and hasattr(node.args[0], "op")
               and not hasattr(IntQuantTensor, node.target))
              or (node.op == "call_function" and node.target is getattr and len(node.args) == 2
                  and hasattr(node.args[0], "op") and isinstance(node.args[1], str)
                  and not hasattr(IntQuantTensor, node.args[1]))):  # an attribute: ``v.dtype`` (EfficientViT)
            with graph.graph.inserting_before(node):
                plain = graph.graph.call_function(plain_value, (node.args[0],))
            node.args = (plain, *node.args[1:])
            changed += 1
    if changed:
        graph.recompile()
    return changed


_MATMULS = (torch.matmul, torch.bmm)


def _is_matmul(node: Any) -> bool:
    return ((node.op == "call_function" and (node.target in _MATMULS or node.target is operator.matmul)) or
            (node.op == "call_method" and node.target in ("matmul", "bmm")))


def _reads_softmax(node: Any) -> bool:
    return ((node.op == "call_method" and node.target == "softmax") or
            (node.op == "call_function" and node.target in (torch.softmax, F.softmax)))


def matmul_inputs_quantized(graph: Any, signed_act: type, unsigned_act: type) -> int:
    """A quantizer on both inputs of every matmul of two activations in a quantized fx ``graph``.

    Brevitas' graph mode quantizes the inputs of layers, adds and concats; a matmul written in code
    (``q @ k.transpose(-2, -1)`` in timm's EfficientViT-M, EdgeNeXt's cross-covariance attention, LeViT)
    is none of those, so its inputs stay float and no runtime runs it in INT8. The rule: a matmul's
    activation inputs are quantized, unsigned when they are probabilities (read from a softmax), else
    signed; a weight (a ``get_attr`` constant) is left to the runtime's weight handling. Returns how many
    quantizers were added."""
    import brevitas.nn as qnn

    added = 0
    for node in list(graph.graph.nodes):
        if not _is_matmul(node):
            continue
        args = list(node.args)
        for k, arg in enumerate(args[:2]):
            if not hasattr(arg, "op") or arg.op == "get_attr":
                continue
            name = f"{node.name}_input{k}_quant"
            act = unsigned_act if _reads_softmax(arg) else signed_act
            graph.add_submodule(name, qnn.QuantIdentity(act_quant=act, return_quant_tensor=False))
            with graph.graph.inserting_before(node):
                args[k] = graph.graph.call_module(name, (arg,))
            added += 1
        node.args = tuple(args)
    if added:
        graph.recompile()
    return added


def sliced_outputs_quantized(graph: Any, signed_act: type) -> int:
    """A quantizer on the output of every conv/linear in a quantized fx ``graph`` that is read only in
    pieces (slices, chunks, splits), each piece requantized on its own.

    Brevitas quantizes where a consumer needs it, so such an output is quantized after the pieces
    (timm's rexnet: ``cat([x[:, :c] + shortcut, x[:, c:]])``, two pieces on two grids): ``Conv -> Slice ->
    Q``. ONNX Runtime fuses a conv into ``QLinearConv`` only when a QuantizeLinear reads its output, and
    moves a Q up through a Slice only where the Slice is the output's one reader: rexnet_100 ran 11 of
    its 76 convs in float, 1.76x quantize_static's latency. The layer's own quantizer (what
    quantize_static puts on every tensor) makes it ``Conv -> Q -> DQ -> Slice -> Q``: the pieces are then
    requantized from INT8. Returns how many quantizers were added."""
    import brevitas.nn as qnn

    from .brevitas_rules import is_piece

    layers = (qnn.QuantConv1d, qnn.QuantConv2d, qnn.QuantConv3d, qnn.QuantLinear)
    added = 0
    for node in list(graph.graph.nodes):
        if not (node.op == "call_module" and isinstance(graph.get_submodule(node.target), layers)):
            continue
        if not node.users or not all(is_piece(user) for user in node.users):
            continue
        name = f"{node.name}_output_quant"
        graph.add_submodule(name, qnn.QuantIdentity(act_quant=signed_act, return_quant_tensor=True))
        with graph.graph.inserting_after(node):
            quantized = graph.graph.call_module(name, (node,))
        node.replace_all_uses_with(quantized, delete_user_cb=lambda user: user is not quantized)
        added += 1
    if added:
        graph.recompile()
    return added
