"""Which of a text teacher's layers a shallower student keeps, chosen by measurement (``student: {layers:
measured}``).

The start matters more than the recipe: on all-MiniLM-L6-v2 (6 layers), before any training, a 3-layer
student of layers [0, 2, 4] (``alternate``, DistilBERT's rule) kept 0.37 mean cosine to the teacher's
embeddings, [1, 3, 5] 0.51 and [3, 4, 5] 0.61 (issue 25). No fixed rule is best for every model, so each
candidate subset is scored as it stands, untrained, by the run's own task on the validation split (the
cosine to the teacher's embeddings, or accuracy), and the best is kept: the same measurement for any
encoder, and the scores go into the run.
"""

from __future__ import annotations

import itertools
import math
import random

from torch import nn

from ...data.base import Splits
from ...progress import console
from ...train.device import CPU, Device
from ...train.evaluate import accuracy

MAX_CANDIDATES = 24  # C(6, 3) = 20 all fit; a 12-layer teacher's 924 halves are sampled


def candidate_layers(depth: int, keep: int, limit: int = MAX_CANDIDATES, seed: int = 0) -> list[tuple[int, ...]]:
    """Subsets of ``keep`` of ``depth`` layers to score: all of them when there are at most ``limit``;
    otherwise the usual rules (every other layer from the first and from the second, evenly spaced
    ending at the last, the first and the last ``keep``) and a seeded sample of the rest."""
    if math.comb(depth, keep) <= limit:
        return list(itertools.combinations(range(depth), keep))
    step = depth / keep
    ruled = [tuple(range(0, depth, 2))[:keep], tuple(range(1, depth, 2))[:keep],
             tuple(sorted({min(depth - 1, round((k + 1) * step) - 1) for k in range(keep)})),
             tuple(range(keep)), tuple(range(depth - keep, depth))]
    chosen = list(dict.fromkeys(c for c in ruled if len(c) == keep))
    rng = random.Random(seed)
    while len(chosen) < limit:
        pick = tuple(sorted(rng.sample(range(depth), keep)))
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def choose_layers(teacher: nn.Module, splits: Splits, keep: int, device: Device = CPU,
                  seed: int = 0) -> tuple[list[int], dict[str, float]]:
    """The candidate subset whose untrained student scores best on the validation split (the first of
    equal ones), and every candidate's score keyed ``"0,2,4"``."""
    from ...models.text import drop_layers, encoder_layers

    depth = len(encoder_layers(teacher)[1])
    scores: dict[str, float] = {}
    for layers in candidate_layers(depth, keep, seed=seed):
        student = drop_layers(teacher, list(layers))
        scores[",".join(map(str, layers))] = round(accuracy(student, splits, "val", device), 6)
    best = max(scores, key=scores.get)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    console.print(f"  student layers: {len(scores)} subsets of {keep} of {depth} scored untrained on val; "
                  f"kept [{best}] ({scores[best]:.4f}); next " + ", ".join(f"[{k}] {v:.4f}" for k, v in ranked[1:4]))
    return [int(i) for i in best.split(",")], scores
