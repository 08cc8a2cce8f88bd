"""Issue 27, detection distillation losses: each has a value, a gradient, and is zero for identical
models; the rows must share the teacher's candidates."""

from __future__ import annotations

import pytest
import torch

from edgekd.errors import RecipeError
from edgekd.losses import LOSSES, Batch


def rows(n: int = 2, anchors: int = 30, classes: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, anchors, 2, generator=g) * 80
    wh = 8 + torch.rand(n, anchors, 2, generator=g) * 40
    scores = torch.rand(n, anchors, classes, generator=g)
    return torch.cat([xy, xy + wh, scores], dim=-1)


def loss(name: str, **params):
    cls = LOSSES.get(name)
    return cls(cls.Params(**params), f"loss.{name}")


def batch(student: torch.Tensor, teacher: torch.Tensor) -> Batch:
    return Batch(logits=student, labels=None, index=torch.arange(len(student)), teacher_logits=[teacher])


@pytest.mark.parametrize("name", ["detection-score-kd", "detection-box-kd"])
def test_a_detection_loss_is_zero_for_identical_rows_positive_otherwise_and_has_a_gradient(name):
    teacher = rows(seed=0)
    term = loss(name)
    assert float(term(batch(teacher.clone(), teacher))) == pytest.approx(0.0, abs=1e-5)
    student = rows(seed=1).requires_grad_(True)
    value = term(batch(student, teacher))
    assert float(value) > 0.01
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_the_box_loss_looks_only_at_the_teachers_confident_candidates():
    teacher = rows(seed=0)
    teacher[..., 4:] = 0.1  # confident nowhere
    student = rows(seed=1).requires_grad_(True)
    value = loss("detection-box-kd", min_score=0.3)(batch(student, teacher))
    assert float(value) == 0.0
    value.backward()  # still part of the graph
    moved = teacher.clone()
    moved[0, 0, 4] = 0.9  # one confident candidate: only its box counts
    student = teacher.clone()
    student[0, 1, :4] += 20  # an unconfident candidate moved: no loss
    assert float(loss("detection-box-kd")(batch(student, moved))) == pytest.approx(0.0, abs=1e-6)
    student[0, 0, :4] += 20
    assert float(loss("detection-box-kd")(batch(student, moved))) > 0.1


def test_rows_of_another_detector_are_refused_with_what_fits():
    with pytest.raises(RecipeError, match="must match .* a pruned or narrower copy of the same detector"):
        loss("detection-score-kd")(batch(rows(anchors=30), rows(anchors=40)))


def test_the_detection_task_names_its_losses():
    from edgekd.tasks import task_for

    task = task_for("detection")
    assert task.loss_problem("detection-box-kd") is None and task.loss_problem("spatial-attention") is None
    assert "does not fit a detection run" in task.loss_problem("kd")
