"""Embedding: sentence (or image) embeddings scored against the teacher's own embeddings of the same
samples: mean cosine similarity, and the Spearman correlation of the pairwise similarities (does the
student rank which samples are alike the way the teacher does: what search and clustering use)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import TASKS, Agreement, Task


def unit_rows(e: np.ndarray) -> np.ndarray:
    e = e.astype(np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def embedding_scores(embeddings: np.ndarray, teacher: np.ndarray) -> dict[str, Any]:
    """Mean cosine of each pair and the Spearman correlation of the two models' pairwise similarities."""
    from scipy.stats import spearmanr

    s, t = unit_rows(embeddings), unit_rows(teacher)
    upper = np.triu_indices(len(s), k=1)
    rho = spearmanr((s @ s.T)[upper], (t @ t.T)[upper]).statistic if len(s) > 2 else float("nan")
    return {"cosine_to_teacher": float(np.mean(np.sum(s * t, axis=1))), "spearman": float(rho),
            "pairs": int(len(upper[0]))}


@TASKS.register("embedding")
class Embedding(Task):
    name: ClassVar[str] = "embedding"
    metric: ClassVar[str] = "mean cosine to the teacher's embeddings"
    default_loss: ClassVar[str] = "embedding-cosine"
    # a logit loss (kd, the usual default) would soften embedding dimensions as if they were classes
    losses: ClassVar[tuple[str, ...] | None] = ("embedding-cosine", "minilm", "minilm-v2", "tinybert-hidden", "hint")
    outputs_classes: ClassVar[bool] = False
    built_for_classes: ClassVar[bool] = False
    text_head: ClassVar[str] = "mean-pool"
    agreement_floor: ClassVar[str] = "int8_min_cosine"
    references_from_teacher: ClassVar[bool] = True

    def score(self, outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
        if reference is None or reference.shape != outputs.shape:
            from ..errors import StageError

            raise StageError(f"embedding scores need the teacher's embeddings of the same samples (outputs "
                             f"{outputs.shape}, teacher {None if reference is None else reference.shape})")
        scores = embedding_scores(outputs, reference)
        return {"accuracy": scores["cosine_to_teacher"], "embedding": scores}

    def agreement(self, reference: np.ndarray, output: np.ndarray) -> Agreement:
        cosine = float(np.mean(np.sum(unit_rows(output) * unit_rows(reference), 1)))
        return Agreement(cosine, "mean cosine of the embeddings", {"cosine": cosine})
