"""Transformer distillation losses (issue 16.5): MiniLM, MiniLMv2, TinyBERT hidden states, embeddings.

They read a self-attention block's queries, keys and values as the outputs of its three projections
(``query``/``key``/``value`` in Hugging Face BERT-family models, named in the recipe as the block's
module, e.g. ``encoder.layer.5.attention.self``), captured by the same forward hooks as every feature
loss, so nothing in the student changes and the exported student carries none of it. Tokens whose
``attention_mask`` is 0 (padding) are left out of every relation when the batch carries the mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..models.features import Tap, resolve_module
from .base import LOSSES, Batch, DistillTerm, Params, SetupInfo
from .feature import _Paired

PROJECTIONS = ("query", "key", "value")


class AttentionBlockParams(Params):
    student: str = Field(description="the student's self-attention module (with query/key/value Linear children)")
    teacher: str = Field(description="the teacher's self-attention module")


def self_attention_relation(a: torch.Tensor, b: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Log of ``softmax(A_h B_hᵀ / √d_h)`` per head: (N, heads, S, S) from (N, S, D) projections split
    into ``heads`` of ``D / heads``. Masked key positions get no probability."""
    n, s, d = a.shape
    if d % heads:
        raise RecipeError(f"a hidden size of {d} does not split into {heads} heads")
    ah = a.view(n, s, heads, d // heads).transpose(1, 2)
    bh = b.view(n, s, heads, d // heads).transpose(1, 2)
    scores = ah @ bh.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(student_log: torch.Tensor, teacher_log: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``KL(teacher ‖ student)`` over the last axis, averaged over heads and (unmasked) query tokens."""
    kl = (teacher_log.exp() * (teacher_log - student_log)).sum(-1)  # (N, heads, S)
    if mask is None:
        return kl.mean()
    weights = mask.to(kl.dtype)[:, None, :].expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0)


class _AttentionBlocks(DistillTerm):
    """Shared by MiniLM and MiniLMv2: taps on the query/key/value projections of one block each side."""

    Params = AttentionBlockParams
    needs_labels = False

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for role, model, name in (("the student", student, self.params.student),
                                  ("the teacher", teacher, self.params.teacher)):
            block = resolve_module(model, name, role, f"{self.key}.{'student' if model is student else 'teacher'}")
            missing = [p for p in PROJECTIONS if not isinstance(getattr(block, p, None), nn.Linear)]
            if missing:
                raise RecipeError(f"{self.key}: {role}'s {name!r} has no {missing[0]!r} Linear; name a self-attention "
                                  f"block (e.g. encoder.layer.5.attention.self)")
        self._student_heads = _heads(resolve_module(student, self.params.student, "the student", self.key))
        self._teacher_heads = _heads(resolve_module(teacher, self.params.teacher, "the teacher", self.key))

    def student_taps(self) -> list[Tap]:
        return [Tap(f"{self.params.student}.{p}") for p in PROJECTIONS]

    def teacher_taps(self) -> list[Tap]:
        return [Tap(f"{self.params.teacher}.{p}") for p in PROJECTIONS]

    def qkv(self, b: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        s = {p: b.student_features[f"{self.params.student}.{p}"] for p in PROJECTIONS}
        t = {p: b.teacher_features[f"{self.params.teacher}.{p}"] for p in PROJECTIONS}
        return s, t


def _heads(block: nn.Module) -> int | None:
    """The attention heads a Hugging Face self-attention module says it has (None if it does not say)."""
    for attr in ("num_attention_heads", "num_heads", "n_heads"):
        value = getattr(block, attr, None)
        if isinstance(value, int):
            return value
    config = getattr(block, "config", None)
    return getattr(config, "num_attention_heads", None)


@LOSSES.register("minilm")
class MiniLM(_AttentionBlocks):
    """MiniLM: Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
    Pre-Trained Transformers" (NeurIPS 2020).

    On the last block: ``KL`` of the teacher's self-attention distributions ``softmax(QKᵀ/√d)`` to the
    student's, plus ``KL`` of the value relations ``softmax(VVᵀ/√d)``, per head, averaged over heads and
    tokens. Needs the same number of heads on both sides (the student's hidden size may differ);
    minilm-v2 lifts that.
    """

    def setup(self, info: SetupInfo) -> None:
        if self._student_heads is None or self._teacher_heads is None or self._student_heads != self._teacher_heads:
            raise RecipeError(f"{self.key}: minilm transfers attention head by head and needs equal head counts "
                              f"(student {self._student_heads}, teacher {self._teacher_heads}); use minilm-v2, "
                              f"whose relation heads need no match")

    def forward(self, b: Batch) -> torch.Tensor:
        s, t = self.qkv(b)
        h, mask = self._student_heads, b.attention_mask
        attention = relation_kl(self_attention_relation(s["query"], s["key"], h, mask),
                                self_attention_relation(t["query"], t["key"], h, mask), mask)
        values = relation_kl(self_attention_relation(s["value"], s["value"], h, mask),
                             self_attention_relation(t["value"], t["value"], h, mask), mask)
        return attention + values


class MiniLMv2Params(AttentionBlockParams):
    relation_heads: int = Field(12, ge=1, description="heads the relations are computed in, on both sides")
    relations: list[str] = Field(["query-query", "key-key", "value-value"], min_length=1,
                                 description="which self-attention relations to transfer")


@LOSSES.register("minilm-v2")
class MiniLMv2(_AttentionBlocks):
    """MiniLMv2: Wang et al., "MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing
    Pretrained Transformers" (Findings of ACL 2021).

    Queries, keys and values of each side are split into the same number of *relation heads* (whatever
    each model's own head count), and the scaled dot-product relations Q-Q, K-K and V-V are matched by
    ``KL(teacher ‖ student)``. The teacher block is usually an upper-middle layer for large teachers and
    the last for base-size ones; the student's is its last.
    """

    Params = MiniLMv2Params

    def setup(self, info: SetupInfo) -> None:
        for name in self.params.relations:
            parts = name.split("-")
            if len(parts) != 2 or any(p not in PROJECTIONS for p in parts):
                raise RecipeError(f"{self.key}.relations: {name!r} is not a relation; valid: query-query, key-key, "
                                  f"value-value (any pair of query/key/value)")
        for role, feats in (("student", info.student_features), ("teacher", info.teacher_features)):
            width = feats[f"{getattr(self.params, role)}.query"].shape[-1]
            if width % self.params.relation_heads:
                raise RecipeError(f"{self.key}.relation_heads: the {role}'s hidden size {width} does not split into "
                                  f"{self.params.relation_heads} heads")

    def forward(self, b: Batch) -> torch.Tensor:
        s, t = self.qkv(b)
        h, mask = self.params.relation_heads, b.attention_mask
        total = b.logits.new_zeros(())
        for name in self.params.relations:
            x, y = name.split("-")
            total = total + relation_kl(self_attention_relation(s[x], s[y], h, mask),
                                        self_attention_relation(t[x], t[y], h, mask), mask)
        return total / len(self.params.relations)


@LOSSES.register("tinybert-hidden")
class TinyBERTHidden(_Paired):
    """TinyBERT's hidden-state loss: Jiao et al., "TinyBERT: Distilling BERT for Natural Language
    Understanding" (Findings of EMNLP 2020).

    ``MSE(H_s W, H_t)`` per layer pair, with a learned projection ``W`` from the student's hidden size to
    the teacher's (kept in this loss, dropped at export); padding tokens left out when the mask is known.
    """

    needs_labels = False  # pairs: [student layer, teacher layer] modules whose (N, S, D) outputs are matched

    def setup(self, info: SetupInfo) -> None:
        self.projections = nn.ModuleList(
            nn.Linear(info.student_features[s].shape[-1], info.teacher_features[t].shape[-1], bias=False)
            for s, t in self.params.pairs)

    def forward(self, b: Batch) -> torch.Tensor:
        total = b.logits.new_zeros(())
        for proj, (s, t) in zip(self.projections, self.params.pairs):
            err = (proj(b.student_features[s]) - b.teacher_features[t]).pow(2).mean(-1)  # (N, S)
            if b.attention_mask is None:
                total = total + err.mean()
            else:
                m = b.attention_mask.to(err.dtype)
                total = total + (err * m).sum() / m.sum().clamp_min(1.0)
        return total / len(self.params.pairs)


class EmbeddingParams(Params):
    pass


@LOSSES.register("embedding-cosine")
class EmbeddingCosine(DistillTerm):
    """Embedding distillation by cosine: ``1 - cos(e_s, e_t)`` on the models' outputs when they are
    sentence embeddings (mean-pooled), the direction-only form of what Reimers & Gurevych match with MSE
    in "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation" (EMNLP 2020).
    Needs no labels; student and teacher embeddings must have the same width (a narrower student is
    matched inside, with tinybert-hidden's projection).
    """

    Params = EmbeddingParams
    needs_labels = False

    def forward(self, b: Batch) -> torch.Tensor:
        if not b.teacher_logits:
            raise RecipeError(f"{self.key}: embedding-cosine needs a teacher")
        student, teacher = b.logits, b.teacher_logits[0]
        if student.shape[-1] != teacher.shape[-1]:
            raise RecipeError(f"{self.key}: student embeddings have {student.shape[-1]} dims, the teacher's "
                              f"{teacher.shape[-1]}; use tinybert-hidden with a projection, or a student of the "
                              f"teacher's width")
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
