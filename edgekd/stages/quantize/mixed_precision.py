"""Accuracy-driven mixed precision: keep the fewest layers in float that meet an accuracy budget.

Given ``max_accuracy_drop`` (absolute, on the validation split, against the float model being
quantized): quantize everything; if that misses the budget, measure each layer's sensitivity by
leaving it alone in float (leave-one-out, calibration only, so the search costs no training), then
return layers to float from the most to the least helpful until the budget is met. The result says
which layers stay float and why (their measured drops). If even that cannot meet the budget, a
StageError reports the best figure achieved: a model that misses its budget is never saved silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from ...errors import StageError


@dataclass
class MixedPrecisionResult:
    overrides: dict[str, int | None]          # the caller's overrides plus the layers kept in float
    float_layers: list[str]                   # layers the search returned to float, in order
    budget: float
    drop_all_quantized: float
    achieved_drop: float
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer -> drop with only it in float

    def to_json(self) -> dict:
        return asdict(self)


def search(layers: list[str], overrides: dict[str, int | None], budget: float,
           drop_of: Callable[[dict[str, int | None]], float], key: str) -> MixedPrecisionResult:
    """``drop_of(overrides)``: accuracy drop of the model quantized (and calibrated) with those overrides."""
    base = drop_of(overrides)
    if base <= budget:
        return MixedPrecisionResult(dict(overrides), [], budget, base, base)
    candidates = [n for n in layers if overrides.get(n, 0) is not None]
    sensitivity = {n: drop_of({**overrides, n: None}) for n in candidates}
    chosen, kept, drop = dict(overrides), [], base
    for name in sorted(candidates, key=lambda n: (sensitivity[n], candidates.index(n))):
        chosen[name] = None
        kept.append(name)
        drop = drop_of(chosen)
        if drop <= budget:
            return MixedPrecisionResult(chosen, kept, budget, base, drop, sensitivity)
    raise StageError(f"{key}: max_accuracy_drop {budget:.4f} cannot be met: quantizing everything drops "
                     f"{base:.4f}, and the best with {len(kept)} layer(s) in float is {drop:.4f}; "
                     f"raise the budget or try QAT, 8-bit weights or another calibration")
