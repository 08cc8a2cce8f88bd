"""The prune stage's recipe keys: the method, its ratios and importance, sparse training (GCP), a latency
goal, and the recovery fine-tuning."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ...config.schema import LossTerms, StageConfig, Strict, stage_config, training_keys


class SparseTraining(training_keys(5, 1e-3, 0.0, patience=False)):
    """Group channel pruning's sparse training: task loss + ``rate · Σ|γ|`` over BN scales, the rate
    moving from ``l1`` to ``l1_final`` over the epochs (``schedule``)."""

    l1: float = Field(1e-4, ge=0.0, description="penalty rate at the start")
    l1_final: float = Field(1e-5, ge=0.0, description="penalty rate at the end (linear, cosine)")
    schedule: Literal["constant", "linear", "cosine"] = "linear"


class Recovery(training_keys(5, 1e-3, 5e-4, min_epochs=0)):
    """Fine-tuning the pruned model against the unpruned one. ``loss`` defaults to ``kd`` plus spatial
    attention at the last pruned layer of every feature-map scale (no channel match needed)."""

    loss: LossTerms | None = None


class LatencyGoal(Strict):
    """Latency-driven pruning: meet ``max_latency_ms`` (p50) on ``target`` with the least importance removed."""

    target: str = "cpu-openvino"
    max_latency_ms: float = Field(gt=0.0)
    steps: list[float] = Field([0.25, 0.5, 0.75], min_length=1, description="ratios measured per channel group")
    attempts: int = Field(4, ge=1, le=10, description="plans pruned and timed at most (re-plans after a miss)")

    @field_validator("steps")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < r < 1.0 for r in v) or v != sorted(set(v)):
            raise ValueError("must be increasing ratios strictly between 0 and 1")
        return v


@stage_config("prune")
class PruneConfig(StageConfig):
    """Structured channel pruning through Torch-Pruning's dependency graph, then recovery by distillation.

    ``method``: ``uniform`` (``ratio`` of every group's channels), ``global`` (``ratio`` of all channels,
    ranked together), ``groups`` (``group_ratios`` by layer-name pattern, ``ratio`` elsewhere), ``gcp``
    (group channel pruning: sparse training, then a |γ| threshold per feature-map-scale group at
    ``group_ratios[scale]`` or ``ratio``), ``latency`` (ratios chosen from a measured latency table to
    meet ``latency.max_latency_ms``).
    """

    stage: Literal["prune"]
    order: ClassVar[int] = 0
    method: Literal["uniform", "global", "groups", "gcp", "latency"] = "uniform"
    ratio: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of channels removed")
    group_ratios: dict[str, float] = Field(default_factory=dict, description="groups: layer-name pattern -> "
                                           "ratio; gcp: feature-map scale ('16x16') -> ratio")
    importance: Literal["l1", "l2", "bn-scale", "taylor"] = "l1"
    round_to: int | None = Field(None, ge=2, description="keep channel counts multiples of this (e.g. 8, 16)")
    ignore: list[str] = Field(default_factory=list, description="layer-name patterns kept whole "
                              "(class-score layers always are)")
    max_layer_ratio: float = Field(1.0, gt=0.0, le=1.0, description="global/gcp: most any one group may lose")
    sparse: SparseTraining | None = Field(None, description="gcp: sparse training first (default settings if omitted)")
    latency: LatencyGoal | None = None
    recovery: Recovery = Recovery()

    def trained_losses(self) -> list[tuple[str, LossTerms]]:
        return [("recovery.loss", self.recovery.loss)] if self.recovery.loss else []

    @field_validator("group_ratios")
    @classmethod
    def _group_ratios(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, r in v.items() if not 0.0 <= r < 1.0]
        if bad:
            raise ValueError(f"ratios must be in [0, 1) (bad: {', '.join(bad)})")
        return v

    @model_validator(mode="after")
    def _method_needs(self) -> "PruneConfig":
        if self.method == "latency" and self.latency is None:
            raise ValueError("method 'latency' needs 'latency: {target: ..., max_latency_ms: ...}'")
        if self.method != "latency" and self.latency is not None:
            raise ValueError("'latency' applies to method 'latency' only")
        if self.group_ratios and self.method not in ("groups", "gcp"):
            raise ValueError("'group_ratios' applies to methods 'groups' and 'gcp' only")
        if self.sparse is not None and self.method != "gcp":
            raise ValueError("'sparse' applies to method 'gcp' only")
        return self
