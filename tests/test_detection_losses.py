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


def fgd_batch(fs: torch.Tensor, ft: torch.Tensor, boxes: torch.Tensor) -> Batch:
    return Batch(logits=torch.empty(0), labels=boxes, index=torch.arange(len(fs)), teacher_logits=[],
                 student_features={"s": fs}, teacher_features={"t": ft}, input_size=(64, 64))


def fgd_term(cs: int, ct: int):
    from types import SimpleNamespace

    term = loss("fgd", pairs=[("s", "t")])
    term.setup(SimpleNamespace(student_features={"s": torch.zeros(1, cs, 8, 8)},
                               teacher_features={"t": torch.zeros(1, ct, 8, 8)}))
    return term


def test_fgd_is_zero_for_identical_features_and_its_adapter_learns_when_channels_differ():
    from edgekd.data.boxes import ImageBoxes, pack

    boxes = torch.from_numpy(pack([ImageBoxes.of([(8, 8, 40, 40)], [1]), ImageBoxes.of([], [])], 1))
    ft = torch.randn(2, 16, 8, 8)
    assert float(fgd_term(16, 16)(fgd_batch(ft.clone(), ft, boxes))) == pytest.approx(0.0, abs=1e-7)
    term = fgd_term(8, 16)  # a pruned student: a 1x1 adapter inside the loss
    fs = torch.randn(2, 8, 8, 8, requires_grad=True)
    value = term(fgd_batch(fs, ft, boxes))
    assert float(value) > 0
    value.backward()
    assert fs.grad.abs().sum() > 0 and term.adapters[0].weight.grad.abs().sum() > 0


def test_fgd_masks_weigh_each_box_and_the_background_alike():
    from edgekd.data.boxes import ImageBoxes, pack
    from edgekd.losses.detection import box_masks

    rows = torch.from_numpy(pack([ImageBoxes.of([(0, 0, 32, 32), (40, 40, 48, 48)], [0, 1])], 2))
    foreground, scale = box_masks(rows, (64, 64), (16, 16))  # stride 4
    assert float(foreground[0, :8, :8].min()) == 1.0 and float(foreground[0, 10:12, 10:12].min()) == 1.0
    big, small = scale[0, :8, :8], scale[0, 10:12, 10:12]
    assert float(big.sum()) == pytest.approx(1.0) and float(small.sum()) == pytest.approx(1.0)
    assert float((scale[0] * (1 - foreground[0])).sum()) == pytest.approx(1.0)  # the background, as one


def test_fgd_refuses_a_batch_without_boxes():
    ft = torch.randn(2, 16, 8, 8)
    batch = fgd_batch(ft, ft, None)
    with pytest.raises(RecipeError, match="fgd needs a detection batch"):
        fgd_term(16, 16)(batch)
