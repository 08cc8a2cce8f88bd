"""Latency-driven pruning: a per-target latency table, and per-group ratios chosen from it.

FLOPs do not predict latency on a real runtime (kernels pick tiles and vector widths by channel
count, memory-bound layers gain little, fixed per-call costs stay), so the table is *measured*: for
each channel group (Torch-Pruning's coupled channel sets, named by their root layer) and each ratio
in ``steps``, the model with only that group pruned is exported and timed by the target's own
backend. Latency after pruning several groups is predicted as additive:

    T(r) ≈ T0 + Σ_g (T_g(r_g) − T0)          (T_g piecewise-linear between the measured steps)

The ratios are chosen greedily: from nothing pruned, repeatedly advance the group whose next step
saves the most predicted milliseconds per unit of importance removed, until the prediction meets the
budget. Importance is Torch-Pruning's per-channel score, normalised to mean 1 inside each group, so
removing ``k`` channels costs about ``k`` units plus how much more important than average they are.

Tables are cached on disk per target and model hash (``$EDGEKD_CACHE/latency-lut``), since building
one costs ``groups × steps`` compile-and-time runs.
"""

from __future__ import annotations

import copy
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .artifact import config_hash
from .errors import StageError
from .fileio import read_json, write_json
from .pruning import ChannelGroup, prune_channels

LatencyOf = Callable[[nn.Module], float]  # ms of a float model on the target (exported and timed there)
TABLE_FORMAT = 2  # bump when how a table is measured changes, so cached tables are not reused


@dataclass
class LatencyTable:
    target: str
    base_ms: float
    steps: list[float]              # pruning ratios measured, without 0
    groups: dict[str, list[float]]  # root layer -> ms with only that group pruned at each step
    key: str = ""

    def group_ms(self, root: str, ratio: float) -> float:
        return float(np.interp(ratio, [0.0, *self.steps], [self.base_ms, *self.groups[root]]))

    def predict(self, ratios: dict[str, float]) -> float:
        return self.base_ms + sum(self.group_ms(g, r) - self.base_ms for g, r in ratios.items() if g in self.groups)

    def to_json(self) -> dict:
        return asdict(self)


def table_key(model_hash: str, target: dict, input_shape: tuple[int, ...], steps: list[float],
              round_to: int | None, ignore: list[str]) -> str:
    """What a table is valid for: the model, the target's settings, the machine, the candidate shapes."""
    return config_hash(TABLE_FORMAT, model_hash, target, list(input_shape), steps, round_to, sorted(ignore),
                       platform.machine(), platform.processor(), os.cpu_count())


def cache_path(target: str, key: str) -> Path:
    from .default import cache_dir

    return cache_dir() / "latency-lut" / f"{target}-{key}.json"


def build_table(model: nn.Module, example: torch.Tensor, groups: list[ChannelGroup], steps: list[float], *,
                num_classes: int, latency_of: LatencyOf, target: str, key: str, round_to: int | None = None,
                ignore: list[str] = (), log: Callable[[str], None] = lambda _: None) -> LatencyTable:
    """Measure (or load from the cache) the table for ``model``'s ``groups`` on ``target``."""
    cached = cache_path(target, key)
    if cached.is_file():
        data = read_json(cached)
        if set(data.get("groups", {})) == {g.root for g in groups}:
            log(f"latency table: reused {cached}")
            return LatencyTable(**data)
    base = float(np.median([latency_of(model) for _ in range(3)]))  # every row is read against it
    rows: dict[str, list[float]] = {}
    for i, group in enumerate(groups):
        rows[group.root] = []
        for ratio in steps:
            pruned = copy.deepcopy(model)
            prune_channels(pruned, example, ratio=0.0, layer_ratios={group.root: ratio}, round_to=round_to,
                           num_classes=num_classes, ignore=ignore)
            rows[group.root].append(latency_of(pruned))
        log(f"latency table {i + 1}/{len(groups)}: {group.root} "
            + " ".join(f"{r:.2f}:{ms:.3f}" for r, ms in zip(steps, rows[group.root])) + f" ms (base {base:.3f})")
    table = LatencyTable(target, base, list(steps), rows, key)
    write_json(cached, table.to_json())
    return table


def importance_removed(group: ChannelGroup, ratio: float) -> float:
    """Importance units lost when ``ratio`` of the group's channels go (the least important first)."""
    scores = group.importance / group.importance.mean().clamp_min(1e-12)
    k = int(ratio * group.channels)
    return float(torch.sort(scores).values[:k].sum()) if k > 0 else 0.0


@dataclass
class LatencyChoice:
    ratios: dict[str, float]       # root layer -> ratio (groups left whole are absent)
    predicted_ms: float
    importance_removed: float      # fraction of all groups' importance units
    budget_ms: float


def choose_ratios(table: LatencyTable, groups: list[ChannelGroup], budget_ms: float, key: str) -> LatencyChoice:
    """The greedy choice described in the module docstring; StageError if even the most pruning the
    table allows is predicted to miss the budget."""
    ladder = [0.0, *table.steps]
    level = {g.root: 0 for g in groups}
    by_root = {g.root: g for g in groups}
    total = sum(g.channels for g in groups) or 1

    def ratios() -> dict[str, float]:
        return {root: ladder[i] for root, i in level.items() if i > 0}

    predicted = table.predict(ratios())
    while predicted > budget_ms:
        best, best_score = None, 0.0
        for root, i in level.items():
            if i + 1 >= len(ladder):
                continue
            saved = table.group_ms(root, ladder[i]) - table.group_ms(root, ladder[i + 1])
            lost = importance_removed(by_root[root], ladder[i + 1]) - importance_removed(by_root[root], ladder[i])
            score = saved / max(lost, 1e-6)
            if saved > 0 and score > best_score:
                best, best_score = root, score
        if best is None:
            raise StageError(f"{key}: the latency budget {budget_ms:.3f} ms cannot be met: the most pruning the "
                             f"table allows (ratios up to {ladder[-1]}) is predicted at {predicted:.3f} ms; "
                             f"raise max_latency_ms or add larger steps")
        level[best] += 1
        predicted = table.predict(ratios())
    removed = sum(importance_removed(by_root[r], v) for r, v in ratios().items()) / total
    return LatencyChoice(ratios(), predicted, removed, budget_ms)
