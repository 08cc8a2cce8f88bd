"""Hugging Face text encoders as edgekd models: ``hf:DIR`` checkpoints, the task head, and students
made by dropping layers (DistilBERT's every-other-layer initialisation).

Loading is offline (``local_files_only``; nothing is downloaded) and safetensors-only unless the user
passes ``--trust-checkpoint`` (a ``pytorch_model.bin`` is a pickle). Every load goes through ``hub``,
which pins ``trust_remote_code=False``: a model folder's own Python is not run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError, first_line
from .hub import from_config, pretrained

Task = str  # a registered task's name (``edgekd.tasks``); its ``text_head`` picks the head


def logits_head(task: Task) -> bool:
    """Whether the task's text models end in the sequence-classification head (class logits), rather
    than mean-pooled token states."""
    from ..tasks import TASKS

    return TASKS.get(task).text_head == "logits"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding: the mean of the token states the mask keeps (Sentence-BERT's pooling)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextModel(nn.Module):
    """A Hugging Face encoder with edgekd's calling convention.

    ``forward(input_ids, attention_mask, token_type_ids)`` returns class logits (``classification``:
    the model's own sequence-classification head) or mean-pooled sentence embeddings (``embedding``).
    Called with one packed (N, 3, S) tensor, as edgekd's loaders give it, it unpacks it first.
    """

    def __init__(self, backbone: nn.Module, task: Task) -> None:
        super().__init__()
        self.backbone, self.task = backbone, task
        self.class_logits = logits_head(task)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None and input_ids.dim() == 3:
            input_ids, attention_mask, token_type_ids = input_ids.unbind(1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.config, "type_vocab_size", 0):
            kwargs["token_type_ids"] = token_type_ids
        out = self.backbone(**kwargs)
        if self.class_logits:
            return out.logits
        return mean_pool(out.last_hidden_state, attention_mask)


def load_hf(directory: Path, task: Task, num_labels: int | None = None, trust: bool = False) -> TextModel:
    """A local model folder (config.json + weights) as a ``TextModel``; never downloads."""
    if not (directory / "config.json").is_file():
        raise InputError(f"hf:{directory}: no config.json there (a Hugging Face model folder, e.g. from "
                         f"save_pretrained, is expected)")
    has_safetensors = any(directory.glob("*.safetensors"))
    pickles = [p.name for p in directory.glob("*.bin")]
    if not has_safetensors and not trust:
        raise CheckpointError(f"hf:{directory}: weights only as {', '.join(pickles) or 'nothing'}; pickled weights "
                              f"can run code when loaded: convert them to safetensors, or pass --trust-checkpoint "
                              f"if you trust this folder")
    if not has_safetensors and not pickles:
        raise InputError(f"hf:{directory}: no weights (*.safetensors) in the folder")
    try:
        config = pretrained("AutoConfig", directory)
        if logits_head(task):
            if num_labels is not None:
                config.num_labels = num_labels
            backbone = pretrained("AutoModelForSequenceClassification", directory, config=config,
                                  ignore_mismatched_sizes=True, use_safetensors=has_safetensors)
        else:
            backbone = pretrained("AutoModel", directory, config=config, use_safetensors=has_safetensors)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"hf:{directory}: transformers could not load it ({first_line(exc)[:200]})") from None
    backbone.config.use_cache = False
    return TextModel(backbone.eval(), task)


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks: the longest ``nn.ModuleList`` (``encoder.layer`` in BERT)."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise InputError("the model has no list of transformer layers to drop layers from")
    return max(lists, key=lambda nm: len(nm[1]))


def drop_layers(teacher: TextModel, keep: list[int] | None = None) -> TextModel:
    """A student with fewer layers, initialised from the teacher's (DistilBERT: Sanh et al., 2019, keeps
    every other layer): a deep copy with only the ``keep`` blocks (default every other, from the first),
    embeddings and head included."""
    name, layers = encoder_layers(teacher)
    keep = list(range(0, len(layers), 2)) if keep is None else keep
    if not keep or any(not 0 <= i < len(layers) for i in keep) or len(set(keep)) != len(keep):
        raise InputError(f"student.layers: {keep} is not a set of layer indices in 0..{len(layers) - 1}")
    student = copy.deepcopy(teacher)
    parent = student.get_submodule(name.rsplit(".", 1)[0]) if "." in name else student
    setattr(parent, name.rsplit(".", 1)[-1], nn.ModuleList(copy.deepcopy(layers[i]) for i in keep))
    student.config.num_hidden_layers = len(keep)
    for attr in ("layer_types",):  # newer configs list per-layer kinds; keep them in step
        if isinstance(getattr(student.config, attr, None), list):
            setattr(student.config, attr, [getattr(student.config, attr)[i] for i in keep])
    return student


def build_hf(directory: str, num_classes: int | None, task: Task = "classification",
             layers: list[int] | None = None) -> TextModel:
    """An untrained ``TextModel`` of the folder's architecture (its config.json only, no weights), with
    only ``layers`` kept: how edgekd rebuilds its own text artifacts before loading their weights."""
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise InputError(f"hf:{directory}: no config.json there")
    config = pretrained("AutoConfig", path)
    if logits_head(task):
        if num_classes:
            config.num_labels = num_classes
        backbone = from_config("AutoModelForSequenceClassification", config)
    else:
        backbone = from_config("AutoModel", config)
    backbone.config.use_cache = False
    model = TextModel(backbone.eval(), task)
    if layers is not None:
        name, full = encoder_layers(model)
        if len(full) != len(layers):
            model = drop_layers(model, layers)
    return model
