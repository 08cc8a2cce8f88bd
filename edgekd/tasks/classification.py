"""Classification: one logit per class, scored by top-1 accuracy against the data's labels, or by a
custom metric function the recipe names (``metric: package.module:function``)."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import RecipeError
from ..registry import import_named
from .base import TASKS, Agreement, Task


def decisive_agreement(reference: np.ndarray, output: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement on the samples whose reference top-2 logits are further apart than the noise
    between the two outputs: a near-tie (mobilenet_v3_small's random-init logits, equal to 1e-10) can
    flip on any rounding and says nothing about the file.

    The noise is the median over samples of each sample's largest |difference| (typical, so one broken
    sample cannot widen it for all); a sample is near-tied when its top-2 gap is within twice that.
    Returns the agreement on the decisive samples, how many there were, and the margin used.
    """
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.zeros((len(reference), 2))
    gap = top2[:, 1] - top2[:, 0]
    noise = float(np.median(np.max(np.abs(output - reference), axis=1))) if len(reference) else 0.0
    decisive = gap > 2.0 * noise
    agree = output.argmax(1) == reference.argmax(1)
    return {"top1_agreement_decisive": float(np.mean(agree[decisive])) if decisive.any() else None,
            "decisive_samples": int(decisive.sum()), "tie_margin": 2.0 * noise}


@TASKS.register("classification")
class Classification(Task):
    name: ClassVar[str] = "classification"
    metric: ClassVar[str] = "top-1 accuracy"

    def __init__(self, metric: str | None = None) -> None:
        self.metric_fn: Callable[[np.ndarray, np.ndarray], float] | None = None
        if metric is not None:
            self.metric_fn = import_named(metric, "metric", RecipeError)
            self.metric = metric  # type: ignore[misc] - this instance's metric, by the name the recipe gave

    def score(self, outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
        if self.metric_fn is not None:
            return {"accuracy": self._custom(outputs, labels)}
        return {"accuracy": float(np.mean(outputs.argmax(1) == labels))}

    def chance(self, labels: np.ndarray) -> float | None:
        """Top-1 by always naming the most common class (a custom metric's chance level is its own)."""
        if self.metric_fn is not None or not len(labels):
            return None
        return float(np.bincount(np.asarray(labels, dtype=np.int64)).max() / len(labels))

    def _custom(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        """The recipe's metric function on the outputs and labels, checked to give a score in [0, 1]."""
        try:
            value = float(self.metric_fn(outputs, labels))
        except Exception as exc:  # noqa: BLE001 - the user's function: any failure is theirs, said once
            raise RecipeError(f"metric {self.metric}: failed on outputs {outputs.shape} and labels {labels.shape} "
                              f"({type(exc).__name__}: {exc})") from None
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise RecipeError(f"metric {self.metric}: gave {value!r}; a metric returns a number in [0, 1], higher "
                              f"is better (the report, budgets and baselines compare it as accuracy)")
        return value

    def agreement(self, reference: np.ndarray, output: np.ndarray) -> Agreement:
        detail = decisive_agreement(reference, output)
        return Agreement(detail["top1_agreement_decisive"],
                         f"top-1 agreement on the {detail['decisive_samples']} decisive samples (near-ties within "
                         f"{detail['tie_margin']:.3g} left out)", {})
