"""Self-distillation: the model teaches itself, no separate teacher (METHODS.md, "Self-distillation")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import (LOSSES, Batch, DistillTerm, IntermediateHeads, Params, SetupInfo, soft_kl, sum_across_ranks,
                   with_labels)


class PSKDParams(Params):
    alpha_t: float = Field(0.8, ge=0.0, le=1.0, description="α_T, the final weight of the model's own predictions")


@LOSSES.register("pskd")
class ProgressiveSelfKD(DistillTerm):
    """PS-KD: Kim et al., "Self-Knowledge Distillation with Progressive Refinement of Targets" (ICCV 2021).

    Target at epoch e: ``(1-α_e)·onehot(y) + α_e·p_{e-1}(x)``, the model's own prediction for that
    sample in the previous epoch, with ``α_e = α_T·e/E``. Predictions live in an N×C store indexed by
    sample id (summed across ranks at each epoch's end under DDP, since each rank saw only its shard).
    """

    Params = PSKDParams
    needs_teacher = False

    def setup(self, info: SetupInfo) -> None:
        self.register_buffer("previous", torch.zeros(info.n_train, info.num_classes))
        self.register_buffer("current", torch.zeros(info.n_train, info.num_classes))

    def forward(self, b: Batch) -> torch.Tensor:
        y = with_labels(b, self.key)
        weight = self.params.alpha_t * b.epoch / max(1, b.epochs)
        onehot = F.one_hot(y, b.logits.shape[1]).to(b.logits.dtype)
        target = (1 - weight) * onehot + weight * self.previous[b.index] if b.epoch > 0 else onehot
        self.current[b.index] = F.softmax(b.logits.detach(), dim=1)
        return -(target * F.log_softmax(b.logits, dim=1)).sum(1).mean()

    def end_epoch(self, distributed: bool) -> None:
        self.previous.copy_(sum_across_ranks(self.current.clone()))
        self.current.zero_()


class LayeredParams(Params):
    exits: list[str] = Field(min_length=1, description="student modules that get an auxiliary classifier")
    temperature: float = Field(3.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="share of each exit's loss taken from the deepest exit")
    mutual: float = Field(0.1, ge=0.0, description="weight of the exits' ensemble teaching the final head")


@LOSSES.register("layered-self")
class LayeredSelfKD(IntermediateHeads):
    """Layered self-KD: auxiliary classifiers on intermediate stages ("A Layered Self-Supervised
    Knowledge Distillation Framework for Efficient Multimodal Learning on the Edge"; Zhang et al.,
    "Be Your Own Teacher").

    Each exit learns from the labels and the deepest head's softened output; the deepest head also
    learns from the exits' ensemble (``mutual``). Exits live in this loss, so export removes them at
    zero inference cost.
    """

    Params = LayeredParams
    needs_teacher = False
    modules_key = "exits"

    def forward(self, b: Batch) -> torch.Tensor:
        p, y = self.params, with_labels(b, self.key)
        t = p.temperature
        final = F.softmax(b.logits.detach() / t, dim=1)
        exits = self.head_logits(b)
        loss = F.cross_entropy(b.logits, y)
        for logits in exits:
            loss = loss + (1 - p.alpha) * F.cross_entropy(logits, y) + p.alpha * soft_kl(logits, final, t)
        ensemble = torch.stack([F.softmax(e.detach() / t, dim=1) for e in exits]).mean(0)
        return loss + p.mutual * soft_kl(b.logits, ensemble, t)
