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
one costs ``PASSES × groups × steps`` compile-and-time runs.
"""

from __future__ import annotations

import copy
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...artifacts.artifact import config_hash
from ...errors import StageError
from ...fileio import read_json, write_json
from ..channels import ChannelGroup

LatencyOf = Callable[[nn.Module], float]  # ms of a float model on the target (exported and timed there)
TABLE_FORMAT = 3  # bump when how a table is measured changes, so cached tables are not reused


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
        """Additive prediction, bounded below by zero: single-group savings overlap (they share fixed
        per-call costs), so their plain sum can exceed the whole latency on deep cuts."""
        total = self.base_ms + sum(self.group_ms(g, r) - self.base_ms for g, r in ratios.items() if g in self.groups)
        return max(total, 0.0)

    def to_json(self) -> dict:
        return asdict(self)


def table_key(model_hash: str, target: dict, input_shape: tuple[int, ...], steps: list[float],
              round_to: int | None, ignore: list[str]) -> str:
    """What a table is valid for: the model, the target's settings, the machine, the candidate shapes."""
    return config_hash(TABLE_FORMAT, model_hash, target, list(input_shape), steps, round_to, sorted(ignore),
                       platform.machine(), platform.processor(), os.cpu_count())


PASSES = 2  # interleaved passes over every cell (below): the lowest time is kept


def cache_path(target: str, key: str) -> Path:
    from ...fileio import cache_dir

    return cache_dir() / "latency-lut" / f"{target}-{key}.json"


def build_table(model: nn.Module, groups: list[ChannelGroup], steps: list[float], *, latency_of: LatencyOf,
                prune_rows: Callable[[nn.Module, dict[str, float]], Any], target: str, key: str,
                log: Callable[[str], None] = lambda _: None) -> LatencyTable:
    """Measure (or load from the cache) the table for ``model``'s ``groups`` on ``target``: each group cut by
    each of ``steps`` alone (``prune_rows(copy, {root: ratio})``, the stage's own cut rules) and timed."""
    cached = cache_path(target, key)
    if cached.is_file():
        data = read_json(cached)
        if set(data.get("groups", {})) == {g.root for g in groups}:
            log(f"latency table: reused {cached}")
            return LatencyTable(**data)
    # Interleaved passes, the lowest time kept per cell: on a shared machine a slow episode lasts seconds
    # and hits whatever is being timed then; a second pass over every cell times it again at another moment.
    base = float("inf")
    rows: dict[str, list[float]] = {g.root: [float("inf")] * len(steps) for g in groups}
    for _ in range(PASSES):
        base = min(base, latency_of(model))
        for group in groups:
            for j, ratio in enumerate(steps):
                pruned = copy.deepcopy(model)
                prune_rows(pruned, {group.root: ratio})
                rows[group.root][j] = min(rows[group.root][j], latency_of(pruned))
    for i, group in enumerate(groups):
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
    choice = _greedy(table, groups, budget_ms)
    if choice.predicted_ms > budget_ms:
        raise StageError(f"{key}: the latency budget {budget_ms:.3f} ms cannot be met: the most pruning the "
                         f"table allows (ratios up to {table.steps[-1]}) is predicted at {choice.predicted_ms:.3f} "
                         f"ms; raise max_latency_ms or add larger steps")
    return choice


def _greedy(table: LatencyTable, groups: list[ChannelGroup], budget_ms: float) -> LatencyChoice:
    """Greedy steps until the prediction meets ``budget_ms`` or no step saves anything more."""
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
            break
        level[best] += 1
        predicted = table.predict(ratios())
    removed = sum(importance_removed(by_root[r], v) for r, v in ratios().items()) / total
    return LatencyChoice(ratios(), predicted, removed, budget_ms)


@dataclass
class Attempt:
    """One plan, pruned and timed on the target."""

    planned_for_ms: float  # the predicted latency the plan was chosen to meet
    predicted_ms: float
    measured_ms: float
    ratios: dict[str, float]
    importance_removed: float

    def to_json(self) -> dict:
        return asdict(self)


def search_plan(table: LatencyTable, groups: list[ChannelGroup], budget_ms: float, key: str,
                measure: Callable[[dict[str, float]], float], max_attempts: int = 4,
                log: Callable[[str], None] = lambda _: None) -> tuple[list[Attempt], int]:
    """Plan, prune-and-time, re-plan: the attempts made and the index of the one to keep.

    The first plan aims at the real budget. While every plan has missed, the next aims lower by the
    factor the last one fell short (``measured saving / predicted saving``); once one plan has met and
    another missed, the aim is bisected between them, to find the least pruning that still meets.
    Kept: the met attempt with the least importance removed, else the fastest one. Aims never go below
    the table's most-pruned prediction, so a noisy miss cannot send the search to an empty model.
    """
    floor = _greedy(table, groups, -1.0).predicted_ms  # the lowest prediction any plan reaches
    aim, missed_aim, met_aim = budget_ms, None, None
    attempts: list[Attempt] = []
    for _ in range(max_attempts):
        try:
            choice = choose_ratios(table, groups, aim, key)
        except StageError:
            if not attempts:
                raise
            break
        if any(a.ratios == choice.ratios for a in attempts):
            break  # the ladder is discrete: this aim lands on a plan already timed
        measured = measure(choice.ratios)
        attempts.append(Attempt(aim, choice.predicted_ms, measured, choice.ratios, choice.importance_removed))
        log(f"prune (latency): plan for {aim:.3f} ms predicted {choice.predicted_ms:.3f} ms, measured "
            f"{measured:.3f} ms (budget {budget_ms:.3f} ms)")
        if measured <= budget_ms:
            met_aim = aim
            if missed_aim is None:
                break  # the first plan met: aiming higher than the budget would be a guess
        else:
            missed_aim = aim
        if met_aim is not None:
            aim = (met_aim + missed_aim) / 2
        else:
            shrink = (table.base_ms - measured) / max(1e-9, table.base_ms - choice.predicted_ms)
            aim = table.base_ms - (table.base_ms - budget_ms) / min(max(shrink, 0.05), 1.0)
            aim = max(min(aim, missed_aim - 1e-6), floor)
    met = [i for i, a in enumerate(attempts) if a.measured_ms <= budget_ms]
    if met:
        return attempts, min(met, key=lambda i: attempts[i].importance_removed)
    return attempts, min(range(len(attempts)), key=lambda i: attempts[i].measured_ms)
