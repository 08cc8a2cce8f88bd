"""Structured channel removal through Torch-Pruning's dependency graph (DepGraph).

Every removal here goes through Torch-Pruning, so coupled layers (BN, residual adds, concats,
depthwise and grouped convs) follow automatically; nothing matches layers by hand. Two users:

* ``student: {width: w}`` (``uniform_width``): a narrower copy of any CNN, ``1-w`` of every prunable
  layer's channels removed by L1 magnitude;
* the ``prune`` stage (``prune_channels``): importance by magnitude, BN scale or Taylor; ratios
  uniform, global, or per named layer; ``round_to``; ignored layers.

A result is described by a *channel plan* (module name -> output channels), which is all it takes to
rebuild the same shapes later from the original architecture, so a pruned model reloads from
safetensors without pickling any code.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from ..artifacts.artifact import Artifact
from ..errors import StageError, first_line
from .base import REBUILDERS

Importance = Literal["l1", "l2", "bn-scale", "taylor"]


def _classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs have the run's head width (``num_classes``: the class count, or the task's
    ``head_width``): never pruned, so a student keeps the label space, or the teacher's embedding width."""
    return [m for m in model.modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.kernel_size == (1, 1))]


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[list[nn.Module]]:
    """See ``_traceable``; also hushes Torch-Pruning's notice that it found a ViT's ``cls_token`` and
    ``pos_embed`` (it prunes their last dim with the embedding, which is right for timm's ViTs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        with _traceable(model) as whole:
            yield whole


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Make ``model`` traceable by Torch-Pruning while the block runs; yields layers that must stay whole.

    torchvision's ShuffleNetV2 shuffles channels with a 5-D ``view`` that Torch-Pruning cannot map
    (its own test suite lists the model as a failure). While tracing, the shuffle runs as the
    equivalent ``index_select``, and every conv that feeds a concat-and-shuffle is kept whole, so only
    each branch's inner channels are pruned, where no shuffle is crossed. The model's own forward
    is untouched outside the block.
    """
    try:
        from torchvision.models import shufflenetv2 as sv
    except ImportError:
        yield []
        return
    blocks = [m for m in model.modules() if isinstance(m, sv.InvertedResidual)]
    if not blocks:
        yield []
        return
    whole: list[nn.Module] = []
    for block in blocks:
        for branch in (block.branch1, block.branch2):
            convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
            # branch2's first 1x1 conv owns the inner channels; every other conv touches the block's I/O
            whole += [c for c in convs if not (branch is block.branch2 and c is convs[0])]
    original = sv.channel_shuffle

    def index_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
        c = x.shape[1]
        order = torch.arange(c, device=x.device).view(groups, c // groups).t().reshape(-1)
        return x.index_select(1, order)

    sv.channel_shuffle = index_shuffle
    try:
        yield whole
    finally:
        sv.channel_shuffle = original


def _importance(kind: Importance):
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if kind == "bn-scale":  # raw |γ|, as network slimming thresholds it (also across layers when global)
        return tp.importance.BNScaleImportance(normalizer=None)
    return tp.importance.TaylorImportance()


def _trainable(model: nn.Module) -> None:
    for p in model.parameters():  # Torch-Pruning traces through autograd: frozen layers would be skipped
        p.requires_grad_(True)


def _attentions(model: nn.Module) -> list[nn.Module]:
    """timm-style attention modules: a ``qkv`` Linear and an int ``num_heads``."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)]


def _split_attentions(model: nn.Module) -> list[nn.Module]:
    """Hugging Face BERT-style self-attention: ``query``/``key``/``value`` Linears and an int
    ``num_attention_heads`` (``attention_head_size`` and ``all_head_size`` its bookkeeping)."""
    return [m for m in model.modules()
            if all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value"))
            and isinstance(getattr(m, "num_attention_heads", None), int)]


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{qkv layer: number of heads}`` for every attention: Torch-Pruning then removes the same dims
    from every head, so the ``reshape(B, N, 3, heads, head_dim)`` still holds (and a BERT's separate
    query/key/value keep their heads)."""
    heads = {m.qkv: m.num_heads for m in _attentions(model)}
    for m in _split_attentions(model):
        heads.update({getattr(m, p): m.num_attention_heads for p in ("query", "key", "value")})
    return heads


def _sync_attention(model: nn.Module) -> None:
    """After head dims were removed, the attention modules' own bookkeeping must follow the weights."""
    for m in _attentions(model):
        m.head_dim = m.qkv.out_features // (3 * m.num_heads)
        if hasattr(m, "attn_dim"):
            m.attn_dim = m.num_heads * m.head_dim
    for m in _split_attentions(model):
        m.attention_head_size = m.query.out_features // m.num_attention_heads
        m.all_head_size = m.query.out_features
        if hasattr(m, "scaling"):  # newer transformers keep the 1/sqrt(d) factor as an attribute
            m.scaling = m.attention_head_size ** -0.5
    config = getattr(model, "config", None)
    embeddings = next((m for n, m in model.named_modules() if isinstance(m, nn.Embedding)
                       and n.endswith("word_embeddings")), None)
    if config is not None and embeddings is not None and hasattr(config, "hidden_size"):
        config.hidden_size = embeddings.embedding_dim  # what rebuilding from the config must make


def uniform_width(model: nn.Module, example: torch.Tensor, width: float, num_classes: int,
                  keep_weights: bool = True) -> nn.Module:
    """A copy of ``model`` keeping ``width`` of every prunable layer's channels (L1-magnitude choice).

    ``keep_weights=False`` re-initialises every layer afterwards (a narrower architecture, fresh weights).
    """
    student = copy.deepcopy(model).eval()
    if width < 1.0:
        try:
            prune_channels(student, example, Cut(1.0 - width), num_classes=num_classes)
        except StageError as exc:
            raise StageError(f"student.width: {exc}; give the student as 'student: {{arch: ...}}' instead") from None
    if not keep_weights:
        for m in student.modules():
            if hasattr(m, "reset_parameters") and m is not student:
                m.reset_parameters()
    return student


@dataclass(frozen=True)
class Cut:
    """Which channels one pruning removes. ``ratio`` is the fraction of channels removed from each
    prunable group (``global_ranking``: from all of them together, ranked on one scale, no group losing
    more than ``max_layer_ratio``); ``layer_ratios`` overrides it for the groups rooted at the named
    layers; ``importance`` ranks channels (``taylor`` needs gradients); ``round_to`` keeps channel counts
    multiples of it; ``ignore`` names layers kept whole (class-score layers always are)."""

    ratio: float
    importance: Importance = "l1"
    global_ranking: bool = False
    layer_ratios: dict[str, float] | None = None
    round_to: int | None = None
    ignore: tuple[str, ...] | list[str] = ()
    max_layer_ratio: float = 1.0


def prune_channels(model: nn.Module, example: torch.Tensor, cut: Cut, *, num_classes: int,
                   gradients: Callable[[nn.Module], None] | None = None) -> dict[str, tuple[int, int]]:
    """Remove the channels ``cut`` names from ``model`` in place; return ``{layer: (channels before,
    after)}`` for every layer that lost some. ``taylor`` importance needs ``gradients(model)``: a forward
    and backward pass on real data. A global cut that would leave a layer with no channels is refused
    with its name, before anything is removed.
    """
    import torch_pruning as tp

    importance, ratio, ignore = cut.importance, cut.ratio, cut.ignore
    if importance == "taylor":  # once, before both the emptied-layer check and the pruner read them
        if gradients is None:
            raise StageError("taylor importance needs gradients from training data")
        model.zero_grad()
        gradients(model)
    if cut.global_ranking and ratio > 0:
        _refuse_emptied_groups(model, example, ratio, num_classes, importance, list(ignore), cut.max_layer_ratio)
    modules = dict(model.named_modules())
    _trainable(model)
    with traceable(model) as whole:
        kept = [modules[n] for n in ignore] + _classifier_layers(model, num_classes) + whole
        ratios = {modules[n]: r for n, r in (cut.layer_ratios or {}).items()}
        try:
            with torch.enable_grad():  # the graph is traced through autograd, also when called under no_grad
                pruner = tp.pruner.MetaPruner(model, example, importance=_importance(importance),
                                              pruning_ratio=ratio, pruning_ratio_dict=ratios or None,
                                              global_pruning=cut.global_ranking, round_to=cut.round_to,
                                              ignored_layers=kept, max_pruning_ratio=cut.max_layer_ratio,
                                              num_heads=attention_heads(model), prune_head_dims=True)
                groups = list(pruner.step(interactive=True))
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises plain errors on graphs it cannot trace
            raise StageError(f"Torch-Pruning could not prune this model ({first_line(exc, with_type=True)})") from None
        before = channel_plan(model)
        for group in groups:
            group.prune()
        _sync_attention(model)
    after = channel_plan(model)
    return {n: (before[n], after[n]) for n in before if n in after and after[n] != before[n]}


def _refuse_emptied_groups(model: nn.Module, example: torch.Tensor, ratio: float, num_classes: int,
                           importance: Importance, ignore: list[str], max_layer_ratio: float) -> None:
    """Global ranking can put a whole layer below the cut; Torch-Pruning then silently skips that
    group (and removes less than asked). Find such a layer first and refuse by name. (Per-group
    ratios are below 1, so only the global cut can empty a layer.)"""
    groups = channel_groups(model, example, num_classes, importance, ignore)
    scores = torch.cat([g.importance for g in groups])
    k = int(ratio * len(scores))
    if k == 0 or max_layer_ratio < 1.0:  # a cap below 1 keeps every layer non-empty by construction
        return
    in_cut = torch.zeros(len(scores), dtype=torch.bool)
    in_cut[torch.sort(scores, stable=True).indices[:k]] = True
    start = 0
    for g in groups:
        span, start = in_cut[start:start + len(g.importance)], start + len(g.importance)
        if bool(span.all()):
            raise StageError(f"pruning would leave layer {g.root!r} with 0 of its {g.channels} channels (all of "
                             f"them fall in the global cut of {ratio:.0%}); lower the ratio, set max_layer_ratio "
                             f"below 1, or ignore the layer")


def _out_channels(m: nn.Module) -> int | None:
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    return None


@dataclass
class ChannelGroup:
    """A set of channels Torch-Pruning removes together, named by its root layer."""

    root: str
    channels: int
    importance: torch.Tensor  # one score per channel, higher = keep


def channel_groups(model: nn.Module, example: torch.Tensor, num_classes: int, importance: Importance = "l1",
                   ignore: list[str] = ()) -> list[ChannelGroup]:
    """Every prunable group of ``model`` with its per-channel importance (nothing is removed)."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    scorer = _importance(importance)
    _trainable(model)
    with traceable(model) as whole, torch.enable_grad():
        kept = [modules[n] for n in ignore] + _classifier_layers(model, num_classes) + whole
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        out = []
        for group in dg.get_all_groups(ignored_layers=kept, root_module_types=[nn.Conv2d, nn.Linear]):
            root = group[0].dep.target.module
            score = scorer(group)
            if score is None or _out_channels(root) is None:
                continue
            out.append(ChannelGroup(names[root], _out_channels(root), score.detach().float()))
    return out


def channel_plan(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer, by module name."""
    return {name: _out_channels(m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def apply_channel_plan(model: nn.Module, example: torch.Tensor, plan: dict[str, int]) -> nn.Module:
    """Remove channels from ``model`` (in place) until every layer has the plan's output channels.

    Which channels go does not matter (weights are loaded afterwards); the dependency graph makes the
    coupled layers follow, so the result has exactly the shapes of the model the plan came from.
    """
    import torch_pruning as tp

    _trainable(model)
    with traceable(model), torch.enable_grad():  # traced through autograd, also when called under no_grad
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        modules = dict(model.named_modules())
        qkv_heads = attention_heads(model)
        for name, target in plan.items():
            m = modules.get(name)
            if m is None:
                raise StageError(f"channel plan names {name!r}, which the rebuilt model does not have")
            current = _out_channels(m)
            if current == target:
                continue
            if current < target:
                raise StageError(f"channel plan wants {target} channels in {name!r}, which has only {current}")
            fn = tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels
            heads = qkv_heads.get(m)
            if heads:  # the same dims from every head's chunk, as the pruner removed them
                size, keep = current // heads, target // heads
                idxs = [h * size + j for h in range(heads) for j in range(keep, size)]
            else:
                idxs = list(range(target, current))
            dg.get_pruning_group(m, fn, idxs=idxs).prune()
        _sync_attention(model)
    return model


def rebuild_float(artifact: Artifact, parent: nn.Module | None = None) -> nn.Module:
    """The float module of a ``torch`` artifact.

    A width-derived (pruned) student is its architecture with the recorded channel plan applied; the
    architecture comes from its arch spec, or, for a teacher loaded as a trusted pickled module (no
    spec), from a copy of that ``parent`` module.
    """
    from safetensors.torch import load_file

    from ..artifacts.artifact import example_input
    from ..models.checkpoint import build_model, load_state

    meta = artifact.meta
    if meta.get("arch"):
        model = build_model(meta["arch"], **meta["arch_kwargs"])
    elif parent is not None:
        model = copy.deepcopy(parent)
    else:
        raise StageError(f"artifact {artifact.variant}: no arch spec to rebuild it from")
    if "channels" in meta:
        apply_channel_plan(model, example_input(model, meta["input_shape"]), meta["channels"])
    load_state(model, load_file(str(Path(artifact.path) / "model.safetensors")), f"artifact {artifact.variant}")
    return model.eval()


@REBUILDERS.register("torch")
def _rebuild_torch(artifact: Artifact, parent: Callable[[], nn.Module], example: torch.Tensor) -> nn.Module:
    """A float artifact; its parent module is rebuilt only for a width-derived student of a teacher
    that has no arch spec (a trusted pickled module)."""
    meta = artifact.meta
    return rebuild_float(artifact, parent() if "channels" in meta and not meta.get("arch") else None)

