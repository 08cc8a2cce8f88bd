"""What varies with what a model outputs: a *task* says how outputs are scored, how two files' outputs
are judged to agree, which losses fit them, and which head a text model gets.

The rest of edgekd never tests a task's name: the run builds the recipe's task once (``task_for``),
binds it to what its scores are taken against (``Task.scoring``: labels, or the teacher's own outputs)
and hands that ``Scoring`` to training, export and measurement. A new task is a subclass registered
with ``@TASKS.register(name)`` (see ``docs/architecture.md``, "Adding a task").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import RecipeError
from ..registry import Registry

# split -> the model's outputs on that split (float32, in the split's order); how a task gets the
# teacher's outputs without knowing about models, devices or data loaders
Predict = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class Agreement:
    """How closely two files' outputs on the same inputs agree, in the task's own measure."""

    value: float | None  # None: the samples cannot decide (every top-2 pair ties within the noise)
    says: str            # the measure in words, for errors ("top-1 agreement on the decisive samples")
    detail: dict[str, Any] = field(default_factory=dict)  # JSON-safe numbers for the parity record


class Task:
    """The base every task extends; a subclass sets the class attributes and ``score``."""

    name: ClassVar[str] = ""
    metric: ClassVar[str] = ""  # what a row's "accuracy" holds for this task, in words (report, gate)
    default_loss: ClassVar[str] = "kd"  # the distillation loss a training stage uses when its recipe names none
    losses: ClassVar[tuple[str, ...] | None] = None  # the losses that fit its outputs (None: any)
    outputs_classes: ClassVar[bool] = True  # a model's output width is the data's class count
    built_for_classes: ClassVar[bool] = True  # an arch is built with the data's class count (its head sizes)
    label_kind: ClassVar[str] = "classes"  # what the data's labels are: "classes", or "boxes" (yolo, coco)
    text_head: ClassVar[str] = "logits"  # hf: models: "logits" (sequence classification) or "mean-pool"
    agreement_floor: ClassVar[str] = "int8_min_top1_agreement"  # the export key bounding ``agreement``
    references_from_teacher: ClassVar[bool] = False  # scores are taken against the teacher's outputs

    def __init__(self, metric: str | None = None) -> None:
        if metric is not None:
            raise RecipeError(f"metric: the {self.name!r} task scores with its own metric ({self.metric}); "
                              f"a custom metric function is for classification")

    # ---------------------------------------------------------------- scoring
    def score(self, outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
        """``{"accuracy": the score in [0, 1], higher is better, ...}`` of ``outputs`` on samples with
        ``labels``; ``reference`` is the teacher's outputs on them when ``references_from_teacher``."""
        raise NotImplementedError

    def scoring(self, teacher: Predict) -> "Scoring":
        """This task bound to what its scores are taken against on each split (the teacher's outputs are
        computed when a score first needs them: a dry run scores nothing and runs no teacher pass)."""
        return Scoring(self, teacher if self.references_from_teacher else None)

    # ---------------------------------------------------------------- files
    def agreement(self, reference: np.ndarray, output: np.ndarray) -> Agreement:
        """How well ``output`` (a file's) agrees with ``reference`` (its torch model's): what an INT8
        layout that measures its own activation ranges must keep above ``agreement_floor``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- checks
    def output_problem(self, shape: tuple[int, ...], num_classes: int) -> str | None:
        """Why a model with outputs of ``shape`` (one sample) cannot serve this task on the data, or None."""
        if len(shape) != 2:
            return f"the model outputs shape {shape}, not one vector per sample"
        if self.outputs_classes and shape[1] != num_classes:
            return f"the model outputs shape {shape}, but the data has {num_classes} classes"
        return None

    def head_width(self, output_width: int, num_classes: int) -> int:
        """The output width every student of a ``output_width``-wide teacher keeps (pruning and width
        students never narrow the layers that produce it): the class count, or the teacher's own width
        for outputs that are not classes."""
        return num_classes if self.outputs_classes else output_width

    def loss_problem(self, loss: str) -> str | None:
        """Why the loss ``loss`` does not fit this task's outputs, or None."""
        if self.losses is None or loss in self.losses:
            return None
        return (f"{loss!r} does not fit a {self.name} run's outputs; it trains with {', '.join(self.losses)} "
                f"(e.g. loss: [{{name: {self.default_loss}}}])")

    def chance(self, labels: np.ndarray) -> float | None:
        """What a model that ignores its input scores on samples with ``labels`` (the level a teacher must
        clear before anything is distilled from it), or None where the task cannot say."""
        return None

    def describe(self) -> dict[str, Any]:
        """The task as the manifest records it."""
        return {"name": self.name, "metric": self.metric}


@dataclass
class Scoring:
    """A task bound to a run: scores any model's outputs on a split (labels from the data, references
    from the teacher), for training's validation, the stages' metrics and each backend's measurement."""

    task: Task
    teacher: Predict | None = None  # the teacher's outputs on a split, for tasks scored against them
    references: dict[str, np.ndarray] = field(default_factory=dict)  # those outputs, once computed

    def reference(self, split: str) -> np.ndarray | None:
        """The teacher's outputs on ``split`` (computed once), or None for a task scored by labels."""
        if self.teacher is not None and split not in self.references:
            self.references[split] = self.teacher(split)
        return self.references.get(split)

    def scores(self, outputs: np.ndarray, labels: np.ndarray, split: str) -> dict[str, Any]:
        """The task's scores of ``outputs`` on ``split``, ``accuracy`` (the one a run compares by) first."""
        result = self.task.score(np.asarray(outputs, dtype=np.float32), np.asarray(labels), self.reference(split))
        return {**result, "accuracy": float(result["accuracy"])}

    def score(self, outputs: Any, labels: Any, split: str) -> float:
        """The one number a run compares models by (torch tensors or arrays)."""
        as_np = lambda t: t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)  # noqa: E731
        return self.scores(as_np(outputs), as_np(labels), split)["accuracy"]


TASKS: Registry[type[Task]] = Registry("task", RecipeError)


def task_for_labels(kind: str) -> str:
    """The default task for data whose labels are ``kind``: the first registered task that scores them."""
    return next(name for name in TASKS if TASKS.get(name).label_kind == kind)


def task_for(name: str, metric: str | None = None) -> Task:
    """The recipe's task (``task:``), with its custom ``metric:`` function where the task takes one."""
    return TASKS.get(name)(metric=metric)
