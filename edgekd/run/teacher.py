"""The run's teacher: loaded from its checkpoint (or the embedded default, or a Hugging Face folder) and
checked against the data before anything trains; the extra teachers a recipe's losses name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config.schema import Recipe
from ..data import Splits
from ..errors import CheckpointError, DataError, first_line
from ..progress import console
from ..tasks import Task
from ..stages import StageContext
from ..train.evaluate import accuracy, predict_logits
from ..models.checkpoint import LoadedCheckpoint, LoadPolicy, load_checkpoint, load_hf_checkpoint


def load_teacher(checkpoint: Path | None, arch: str | None, policy: LoadPolicy, splits: Splits,
                  arch_args: dict[str, Any], task: Task) -> LoadedCheckpoint:
    from ..train.default_teacher import ARCH, default_teacher

    if checkpoint is None:
        checkpoint, arch = default_teacher(), arch or ARCH
    if is_hf(arch):
        loaded = load_hf_checkpoint(checkpoint, arch, task=task.name, num_classes=splits.num_classes, policy=policy)
        return checked_teacher(loaded, checkpoint, splits, task)
    try:
        # a classifier or detector is built with the data's class count; embedding models keep the width
        # the checkpoint has
        loaded = load_checkpoint(checkpoint, arch, policy=policy,
                                 num_classes=splits.num_classes if task.built_for_classes else None,
                                 in_channels=splits.input_shape[0], arch_args=arch_args)
    except CheckpointError as exc:
        suspect = labels_with_gaps(splits)
        if suspect and "shape mismatch" in str(exc):  # a stray label is the data's fault, not the checkpoint's
            raise DataError(suspect) from None
        raise
    return checked_teacher(as_detector(loaded, splits), checkpoint, splits, task)


def as_detector(loaded: LoadedCheckpoint, splits: Splits) -> LoadedCheckpoint:
    """A torchvision detector wrapped to give the detection task's rows at the data's input size (its
    anchors are fixed for that size); any other model as it is."""
    from dataclasses import replace

    from ..models.detectors import Detector, is_single_stage_detector

    if not is_single_stage_detector(loaded.model):
        return loaded
    c, h, w = splits.input_shape
    if h != w:
        raise CheckpointError(f"a detector is exported for square inputs; the data gives {h}x{w} (set "
                              f"data.preprocess: {{size: N, letterbox: true}})")
    return replace(loaded, model=Detector(loaded.model, h))


def is_hf(arch: str | None) -> bool:
    return bool(arch) and arch.startswith("hf:")


def checked_teacher(loaded: LoadedCheckpoint, checkpoint: Path, splits: Splits, task: Task) -> LoadedCheckpoint:
    """The teacher run on one test sample: it must take the data's inputs and give the outputs the task
    scores (one logit per class for classification)."""
    model = loaded.model.eval()
    try:
        with torch.no_grad():
            out = model(splits.example(1, "test"))
    except Exception as exc:  # noqa: BLE001 - any failure here is a shape/arch mismatch with the data
        raise CheckpointError(f"{checkpoint}: the model does not accept the data's input shape "
                              f"{(1, *splits.input_shape)} ({first_line(exc)}); {size_origin(splits)}") from None
    problem = task.output_problem(tuple(out.shape), splits.num_classes)
    if problem is not None:
        raise CheckpointError(f"{checkpoint}: {problem}")
    return loaded


def size_origin(splits: Splits) -> str:
    """Which recipe key made the data's sample size, so a model that wants another knows what to change."""
    size = getattr(splits.preprocess, "size", None)
    made = (splits.provenance or {}).get("source") in ("digits", "synthetic")
    if made or size is not None:
        return (f"the size {splits.input_shape[1:]} is set by data.image_size (or data.preprocess.size): give "
                f"the size the model takes")
    return (f"the size {splits.input_shape[1:]} is the data's own; data.image_size (or data.preprocess.size) "
            f"resizes it, data.preprocess.channels sets the channels")


def teacher_score(ctx: StageContext) -> float:
    """The teacher's test score by the task. Where the task scores against the teacher's own outputs (an
    embedding run), those outputs are the references the stages use anyway: scored from them, with no
    second pass over the test split; a dry run never asks (on all-MiniLM-L6-v2 that pass was 120 s of
    a 184 s dry run). ``ctx``: the run's stage context (teacher, splits, device)."""
    splits = ctx.splits
    reference = splits.scoring.reference("test")
    if reference is None:
        return accuracy(ctx.teacher, splits, "test", ctx.device)
    return splits.scoring.score(reference, splits.labels("test"), "test")


# how sure the check must be that a teacher is above the bar before letting it teach: one-sided 99%
CHANCE_CONFIDENCE = 0.99
# the bar: chance plus this share of the way from chance to a perfect score
CHANCE_MARGIN = 0.05


def accuracy_lower_bound(correct: int, n: int, confidence: float = CHANCE_CONFIDENCE) -> float:
    """The exact (Clopper-Pearson) one-sided lower confidence bound of ``correct`` successes in ``n``
    trials: never above the true rate more often than ``1 - confidence`` of the time, at any ``n`` (the
    Wilson bound, an approximation, let 6 of 6 two-class guesses through 1.6% of the time)."""
    if n == 0 or correct == 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, correct, n - correct + 1))


def above_chance(correct: int, n: int, chance: float) -> bool:
    """Whether ``correct`` of ``n`` is, with 99% confidence, above chance plus ``CHANCE_MARGIN`` of the
    way from chance to 1 (a teacher at 0.26 on four classes and 10 000 samples is above chance but not
    worth distilling; one at 0.9 on 12 samples is)."""
    return accuracy_lower_bound(correct, n) > chance + CHANCE_MARGIN * (1 - chance)


def check_teacher(ctx: StageContext) -> dict[str, Any] | None:
    """``check_teacher_above_chance`` unless the recipe says ``teacher_check: false``."""
    return check_teacher_above_chance(ctx, ctx.splits.scoring.task) if ctx.recipe.teacher_check else None


def check_teacher_above_chance(ctx: StageContext, task: Task) -> dict[str, Any] | None:
    """The teacher's score on the validation split against what guessing scores there; a teacher that
    cannot be told apart from guessing (its score's 99% lower bound short of chance plus 5% of the way to
    1) stops the run with a data error: its outputs are noise to distil, almost always because the inputs
    are preprocessed otherwise than it was trained with, or the labels name its classes in another order.
    Returns what was measured (for the manifest), or None where the task has no chance level."""
    splits = ctx.splits
    labels = splits.labels("val").numpy()
    chance = task.chance(labels)
    if chance is None:
        return None
    outputs = predict_logits(ctx.teacher, splits, "val", ctx.device)
    score = splits.scoring.score(outputs, labels, "val")
    correct = int(round(score * len(labels)))
    measured = {"val_accuracy": score, "chance": chance, "samples": int(len(labels)),
                "lower_bound": accuracy_lower_bound(correct, len(labels))}
    if above_chance(correct, len(labels), chance):
        console.print(f"teacher: {task.metric} {score:.4f} on the validation split ({len(labels)} samples; chance "
                      f"{chance:.4f})")
        return measured
    names = splits.class_names or []
    order = (f" (the data's classes in label order: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
             if names else "")
    # above chance on few samples, the split may be too small to tell; below it, the inputs are wrong
    few = "; a larger validation split decides more surely" if len(labels) < 100 and score > chance else ""
    raise DataError(
        f"teacher: {task.metric} {score:.3f} on the validation split ({len(labels)} samples) cannot be told "
        f"from chance ({chance:.3f}, always naming the most common class): check that data.preprocess (printed "
        f"above) is what the checkpoint was trained with, and that the labels map to its outputs in the same "
        f"order{order}{few}; a teacher meant to be random runs with teacher_check: false")


def teacher_width(model: torch.nn.Module, splits: Splits) -> int:
    """The width of the teacher's outputs on one test sample (what an embedding student keeps)."""
    with torch.no_grad():
        return int(model.eval()(splits.example(1, "test")).shape[-1])


def labels_with_gaps(splits: Splits) -> str | None:
    """A message about the data when its class count (the largest label + 1) is not backed by its labels:
    label 99 among 0..3 makes 100 "classes" and any 4-class checkpoint look wrong."""
    used = sorted(set(torch.cat([splits.labels(s) for s in ("train", "val", "test")]).tolist()))
    if len(used) >= splits.num_classes:
        return None
    below = f"0..{used[-2]}" if len(used) > 1 else "none"
    return (f"data: label {used[-1]} is out of range of the other labels ({below}, {len(used)} distinct values): "
            f"the data then has {splits.num_classes} classes, more than the model was trained for; fix that label")


def extra_teachers(rec: Recipe) -> list[tuple[str, str | None]]:
    """The (checkpoint, arch) of every extra teacher the recipe's losses name."""
    found: list[tuple[str, str | None]] = []

    def walk(raw: Any) -> None:
        if isinstance(raw, dict):
            if isinstance(raw.get("checkpoint"), str):
                found.append((raw["checkpoint"], raw.get("arch")))
            for value in raw.values():
                walk(value)
        elif isinstance(raw, list):
            for value in raw:
                walk(value)

    walk(rec.model_dump())
    return found
