"""A stage's training objective: the recipe's weighted loss terms, bound to the real models.

Built in a fixed order before the first step: terms are created from the recipe, their module names
resolved against student and teacher (a bad name fails here, with the nearest valid names), teacher
outputs planned (cached or online), one probe batch run for feature shapes, then each term builds its
trainable parts. The objective's parameters train with the student and are never exported.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import LossTerm
from ..data import Splits
from ..errors import RecipeError
from ..models.features import Tap, capture
from ..losses import LOSSES, Batch, DistillTerm, SetupInfo
from ..losses.base import with_labels
from ..progress import console
from .teacher_outputs import TeacherOutputs, TeacherRun


class CrossEntropy(DistillTerm):
    """Plain cross-entropy with the labels: training without a teacher (teacher training, no-KD)."""

    needs_teacher = False

    def forward(self, b: Batch) -> torch.Tensor:
        return F.cross_entropy(b.logits, with_labels(b, self.key))


class Objective(nn.Module):
    """``Σ weight_i · term_i``; each term's value is kept so a non-finite one can be named."""

    def __init__(self, named: list[tuple[str, float, DistillTerm]]) -> None:
        super().__init__()
        self.names = [n for n, _, _ in named]
        self.weights = [w for _, w, _ in named]
        self.terms = nn.ModuleList(t for _, _, t in named)
        # fixed once the terms are bound (before this object exists); read on every training step
        self._student_taps = list(dict.fromkeys(tap for t in self.terms for tap in t.student_taps()))
        self._teacher_taps = list(dict.fromkeys(tap for t in self.terms for tap in t.teacher_taps()))

    @classmethod
    def cross_entropy(cls) -> "Objective":
        return cls([("ce", 1.0, CrossEntropy(None, "ce"))])

    @property
    def needs_teacher(self) -> bool:
        return any(t.needs_teacher for t in self.terms)

    @property
    def needs_labels(self) -> bool:
        return any(t.needs_labels for t in self.terms)

    def student_taps(self) -> list[Tap]:
        return self._student_taps

    def teacher_taps(self) -> list[Tap]:
        return self._teacher_taps

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: term(batch) for name, term in zip(self.names, self.terms)}
        total = sum(w * v for w, v in zip(self.weights, parts.values()))
        return total, parts

    def after_step(self, parts: dict[str, float], batch: Batch) -> None:
        for name, term in zip(self.names, self.terms):
            term.after_step(parts[name], batch)

    def end_epoch(self, distributed: bool) -> None:
        for term in self.terms:
            term.end_epoch(distributed)


def bind_terms(terms: list[LossTerm], key: str, student: nn.Module,
               teacher: nn.Module | None) -> tuple[list[tuple[str, float, DistillTerm]], list[Any]]:
    """Create each term and resolve its module names against the real models (raises RecipeError).

    Cheap (no forward pass), so the pipeline also calls it before the first stage runs. Returns the
    named terms and the extra teachers (``TeacherRef``) a multi-teacher term asks for.
    """
    named: list[tuple[str, float, DistillTerm]] = []
    refs: list[Any] = []
    for i, term in enumerate(terms):
        cls = LOSSES.get(term.name)
        params = term.params()
        loss = cls(params, f"{key}.{i}")
        if cls.needs_teacher and teacher is None:
            raise RecipeError(f"{key}.{i}: loss {term.name!r} needs a teacher; this stage has none")
        if getattr(params, "teachers", None):
            if refs:
                raise RecipeError(f"{key}.{i}: only one multi-teacher term per stage")
            refs = list(params.teachers)
        loss.bind(student, teacher)
        name = term.name if all(t.name != term.name for t in terms[:i]) else f"{term.name}#{i}"
        named.append((name, term.weight, loss))
    return named, refs


def build_objective(terms: list[LossTerm], key: str, student: nn.Module, teacher: nn.Module | None,
                    splits: Splits, run: TeacherRun,
                    load_teacher: Callable[[str, str | None], nn.Module] | None = None,
                    ) -> tuple[Objective, TeacherOutputs | None]:
    """The objective for ``terms`` (recipe key ``key``) and the teacher outputs it reads, made as ``run``
    says (cached in its memo, or on disk under its cache folder when large)."""
    named, refs = bind_terms(terms, key, student, teacher)
    if refs and load_teacher is None:
        raise RecipeError(f"{key}: this stage cannot load the extra teachers multi-teacher names")
    extra_teachers = [load_teacher(r.checkpoint, r.arch) for r in refs] if refs else []
    objective = Objective(named)
    if objective.needs_labels and not splits.labeled:
        needy = ", ".join(sorted({n for n, t in zip(objective.names, objective.terms) if t.needs_labels}))
        raise RecipeError(f"{key}: the training data has unlabeled samples (x_unlabeled), but {needy} needs labels; "
                          f"use kd-labelfree, or drop x_unlabeled")

    outputs = None
    if objective.needs_teacher and teacher is not None:
        outputs = TeacherOutputs.prepare([teacher, *extra_teachers], objective.teacher_taps(), splits,
                                         augmented=run.augmented, key=run.key, memo=run.memo,
                                         cache_dir=run.cache_dir, device=run.device)
        console.print(f"teacher: {outputs.reason}")
    x_probe = splits.example(2)
    probe = torch.arange(len(x_probe))
    student_feats: dict[str, torch.Tensor] = {}
    was_training = student.training
    with torch.no_grad(), capture(student, objective.student_taps(), student_feats):
        student.eval()(x_probe)
    student.train(was_training)
    teacher_feats = ({k: v.float().cpu() for k, v in outputs(probe, x_probe.to(run.device.torch_device))[1].items()}
                     if outputs is not None else {})
    info = SetupInfo(num_classes=splits.num_classes, n_train=splits.size("train"), student=student, teacher=teacher,
                     student_features=student_feats, teacher_features=teacher_feats,
                     train_labels=splits.labels("train"),
                     teacher_features_all=(lambda tap: outputs.all_features(tap, splits)) if outputs else None)
    for loss in objective.terms:
        loss.setup(info)
    return objective, outputs
