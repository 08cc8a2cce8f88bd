"""Validated configuration: recipes, targets and budgets.

Every file is read with ``yaml.safe_load`` and validated by a pydantic model with ``extra="forbid"``,
so a typo fails before any work starts, with a one-line message naming the file, the key and what
would be valid. Names (``default``, ``cpu-openvino``) resolve to the built-in files shipped inside the
package, so they work from any working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from .target import COMMON_TARGET_KEYS, FileName, LatencySpec, Target  # noqa: F401  (re-exported)
from ..errors import BudgetError, EdgekdError, RecipeError
from ..registry import Registry
from ..tasks import TASKS
from ..fileio import LIMITS

BUILTIN_DIR = Path(__file__).parents[1] / "builtin"
RECIPES_DIR = BUILTIN_DIR / "recipes"
MAX_EPOCHS = 10_000  # a bound that catches a typo (epochs: 1e9 as 1000000000) without limiting real schedules
TARGETS_DIR = BUILTIN_DIR / "targets"

class Strict(BaseModel):
    # NaN and infinity are never a meaningful setting or limit (a NaN budget line passed everything)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- data
class Augment(Strict):
    """Random training-time augmentation, drawn from the run's seeded generator.

    Any augmentation makes the teacher run online (its outputs change every epoch); without it the
    teacher's outputs are computed once and cached.
    """

    shift: int = Field(0, ge=0, le=64, description="random translation by up to this many pixels (the border "
                       "filled with normalised black)")
    hflip: bool = Field(False, description="random horizontal flip (not for digits or text)")
    crop_scale: tuple[float, float] | None = Field(None, description="random-resized-crop: the area fraction "
                                                   "range, e.g. [0.5, 1.0]; the crop is resized back to the input size")
    crop_ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="random-resized-crop: aspect ratio range")

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 < v[0] <= v[1]:
            raise ValueError("must be [low, high] with 0 < low <= high")
        return v

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.hflip or self.crop_scale is not None


class PreprocessSpec(Strict):
    """Preprocessing the recipe fixes; every key left out comes from the architecture (timm's
    pretrained config, torchvision weights' transforms) or else the source."""

    size: int | None = Field(None, ge=8, le=1024, description="model input height = width (after the crop)")
    resize: int | None = Field(None, ge=8, le=2048, description="resize the shorter side to this, then "
                               "centre-crop 'size'; omitted: resize straight to 'size'")
    interpolation: Literal["nearest", "bilinear", "bicubic"] | None = None
    mean: tuple[float, ...] | None = Field(None, description="per-channel mean subtracted after scaling to [0, 1]")
    std: tuple[float, ...] | None = Field(None, description="per-channel std divided by")
    channels: Literal[1, 3] | None = Field(None, description="gray -> RGB repeats, RGB -> gray averages")
    letterbox: bool | None = Field(None, description="scale the longer side to 'size' and pad the rest with gray "
                                   "(114/255) instead of cropping: detection, where boxes must stay whole")

    @model_validator(mode="after")
    def _stats(self) -> "PreprocessSpec":
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError("'std' values must be positive")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("'mean' and 'std' need the same number of channels")
        return self


class DataSpec(Strict):
    """Where training, calibration and evaluation samples come from (``edgekd list sources``).

    ``digits``: scikit-learn's bundled 8x8 digits, upsampled to ``image_size`` (the embedded default).
    ``npz``: a file with ``x_train/y_train`` (+ ``x_val/y_val``, ``x_test/y_test``) used as given, or
    ``x``/``y`` split by ``split`` and ``seed``; memory-mapped when stored uncompressed.
    ``imagefolder``: ``path/train``, ``path/val``, optional ``path/test`` (class sub-folders), or one
    folder of class sub-folders split by ``split``.
    ``hf``: a Hugging Face dataset saved with ``save_to_disk``, a local parquet/arrow folder, or a name
    already in the local cache (offline: never downloads).
    ``factory``: ``path: package.module:function`` returning ``{"train": ds, "val": ds, "test": ds}``
    of torch datasets whose items are ``(image, label)``.
    ``synthetic``: random class-conditional images, for smoke tests.
    ``text``: a .csv/.jsonl file (``text_column``, optional ``label_column``) or a save_to_disk folder,
    tokenized with ``tokenizer`` (default: the hf: checkpoint's folder) to ``max_length`` tokens.
    ``yolo``: detection, Ultralytics' layout: ``data.yaml`` (names), ``images/{train,val,test}/``,
    ``labels/{train,val,test}/`` (a ``class cx cy w h`` line per box).
    ``coco``: detection, ``annotations/instances_{train,val,test}.json`` and the images they name.
    """

    source: Literal["digits", "synthetic", "npz", "imagefolder", "hf", "factory", "text", "yolo", "coco"] = "digits"
    path: str | None = None
    image_size: int | None = Field(None, ge=8, le=1024, description="digits/synthetic: the generated size "
                                   "(default 32); other sources: shorthand for preprocess.size")
    preprocess: PreprocessSpec | Literal["none"] | None = Field(
        None, description="keys the recipe fixes (the rest from the architecture, else the source); 'none': nothing "
                          "from the architecture, the samples as the source gives them (image_size still resizes)")
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = 0
    samples: int = Field(512, ge=16, description="synthetic only: number of samples")
    classes: int = Field(10, ge=2, description="synthetic only: number of classes")
    channels: int = Field(1, ge=1, le=4, description="synthetic: input channels; digits: the gray image repeated "
                          "(3 for torchvision/timm models); other sources: use preprocess.channels")
    image_column: str = Field("image", description="hf: the column holding images (or arrays)")
    label_column: str = Field("label", description="hf, text: the column holding labels")
    text_column: str = Field("text", description="text: the column holding the text")
    max_length: int = Field(128, ge=2, le=8192, description="text: tokens per sample (padded, truncated)")
    tokenizer: str | None = Field(None, description="text: a local tokenizer folder (default: the hf: checkpoint's)")
    stream: bool = Field(False, description="text: read each text from the .jsonl file when a batch needs it and "
                         "tokenize it then: memory holds one offset per line, not the corpus (label-free corpora "
                         "of any size; the file-size limit of in-memory text does not apply)")
    split_names: dict[Literal["train", "val", "test"], str] = Field(
        default_factory=dict, description="hf: the dataset's split names (default train; validation|val|valid; test)")
    max_train_samples: int | None = Field(None, ge=1, description="train on a seeded random subset of this size")
    max_eval_samples: int | None = Field(None, ge=1, description="validate and test on a seeded subset of this size")
    calibration_samples: int | None = Field(None, ge=1, description="PTQ/QAT calibration samples (default: the "
                                            "quantize stage's calibration_batches x batch_size)")
    workers: int | Literal["auto"] = Field("auto", description="DataLoader worker processes; auto: none for "
                                           "in-memory sources, up to 4 for files that must be decoded")
    augment: Augment = Augment()

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("must be three positive fractions (train, val, test) summing to 1")
        return v

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 64:
            raise ValueError("must be 'auto' or 0..64")
        return v

    @model_validator(mode="after")
    def _source_needs(self) -> "DataSpec":
        if self.source in ("npz", "imagefolder", "hf", "factory", "text", "yolo", "coco") and not self.path:
            forms = {"npz": "a .npz file", "imagefolder": "a folder of class folders", "hf": "a saved dataset "
                     "folder or a cached dataset name", "factory": "package.module:function",
                     "text": "a .csv/.jsonl file or a save_to_disk folder",
                     "yolo": "a folder with data.yaml, images/ and labels/",
                     "coco": "a folder with annotations/instances_{train,val,test}.json and the images"}
            raise ValueError(f"source {self.source!r} needs 'path' ({forms[self.source]})")
        if self.source not in ("digits", "synthetic") and self.channels != 1:
            raise ValueError(f"'channels' does not apply to source {self.source!r} (only digits and synthetic); "
                             f"use 'preprocess: {{channels: 3}}'")
        if self.image_size is not None and isinstance(self.preprocess, PreprocessSpec) \
                and self.preprocess.size is not None and self.preprocess.size != self.image_size:
            raise ValueError("give the size once: 'image_size' or 'preprocess.size'")
        return self

    @property
    def generated_size(self) -> int:
        """digits/synthetic: the size images are made at."""
        return self.image_size or 32

    def preprocess_spec(self) -> PreprocessSpec | None:
        """The recipe's preprocessing, with ``image_size`` folded in as the size."""
        given = self.preprocess if isinstance(self.preprocess, PreprocessSpec) else None  # "none": no keys
        if self.image_size is None or self.source in ("digits", "synthetic"):
            return given
        base = given.model_dump() if given is not None else {}
        return PreprocessSpec.model_validate({**base, "size": self.image_size})


# ---------------------------------------------------------------- stages
class StudentSpec(Strict):
    """The student: a narrower copy of the teacher's family (``width``) or any arch spec (``arch``)."""

    width: float | None = Field(None, gt=0.0, le=1.0, description="default 0.5 when no arch is given")
    arch: str | None = None
    arch_args: dict[str, Any] = Field(default_factory=dict, description="arch students: constructor arguments")
    init: Literal["pruned", "random"] = Field("pruned", description="width students: keep the teacher's "
                                              "weights on the kept channels, or re-initialise them")
    layers: list[int] | Literal["alternate", "measured"] | None = Field(
        None, description="hf: text teachers: keep these transformer layers (indices), every other one "
                          "('alternate', as DistilBERT), or the subset of 'depth' layers whose untrained student "
                          "scores best on validation ('measured'); initialised from the teacher's")
    depth: int | None = Field(None, ge=1, description="layers: measured: how many layers the student keeps "
                                                      "(default: half the teacher's, rounded up)")

    @model_validator(mode="before")
    @classmethod
    def _one_of(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in ("width", "arch", "layers") if data.get(k) is not None]
            if len(given) > 1:
                raise ValueError(f"give one of 'width', 'arch' or 'layers', not {' and '.join(given)}")
            if not given:
                data = {**data, "width": 0.5}
            if data.get("depth") is not None and data.get("layers") != "measured":
                raise ValueError("'depth' goes with 'layers: measured' (a list of layers says its own depth)")
        return data


class LossTerm(BaseModel):
    """One weighted term of a stage's distillation objective: ``{name: kd, weight: 1, temperature: 4}``.

    Keys other than ``name`` and ``weight`` are the loss's own parameters, validated against that
    loss's ``Params`` model (unknown keys rejected), so ``edgekd list losses`` and the docstrings stay
    the single description of each loss.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    weight: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _known_params(self) -> "LossTerm":
        from ..losses import LOSSES

        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; valid: {', '.join(LOSSES.names())}")
        params_model = LOSSES.get(self.name).Params
        try:
            params_model.model_validate(self.model_extra or {})
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in e["loc"])
            valid = ", ".join(params_model.model_fields) or "none"
            raise ValueError(f"loss {self.name!r}, key {key!r}: {e['msg']} (its keys: {valid})") from None
        return self

    def params(self) -> Any:
        from ..losses import LOSSES

        return LOSSES.get(self.name).Params.model_validate(self.model_extra or {})


def _loss_terms(value: Any) -> Any:
    """``loss: kd`` is shorthand for ``loss: [{name: kd}]``; a single mapping is a one-term list."""
    if isinstance(value, str):
        return [{"name": value}]
    if isinstance(value, dict):
        return [value]
    return value


LossTerms = Annotated[list[LossTerm], Field(min_length=1), BeforeValidator(_loss_terms)]


@dataclass(frozen=True)
class TrainSpec:
    """How long and how fast one training runs: what the training loop takes from a stage's recipe keys
    (``training_keys``). The learning rate follows a cosine schedule over every step."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    patience: int | None = None  # epochs without a better validation score before stopping; None: all


class _TrainingKeys(Strict):
    def train_spec(self) -> TrainSpec:
        """These keys as the loop takes them."""
        return TrainSpec(self.epochs, self.lr, self.weight_decay, getattr(self, "patience", None))


def training_keys(epochs: int, lr: float, weight_decay: float, *, min_epochs: int = 1,
                  patience: bool = True) -> type[Strict]:
    """The recipe keys ``epochs``, ``lr``, ``weight_decay`` (and ``patience``) with one stage's defaults:
    a base class each training config extends, so the keys, their bounds and ``train_spec`` are written
    once rather than copied into every stage."""
    from pydantic import create_model

    fields: dict[str, Any] = {
        "epochs": (int, Field(epochs, ge=min_epochs, le=MAX_EPOCHS, description="passes over the train split")),
        "lr": (float, Field(lr, gt=0.0, description="peak learning rate (AdamW, cosine decay over every step)")),
        "weight_decay": (float, Field(weight_decay, ge=0.0, description="AdamW weight decay"))}
    if patience:
        fields["patience"] = (int | None, Field(None, ge=1, description="stop after this many epochs without a "
                                                "better validation score (early stopping); none: run every epoch"))
    return create_model(f"TrainingKeys_{epochs}_{lr:g}_{weight_decay:g}", __base__=_TrainingKeys, **fields)


class TrainingConfig(Strict):
    """What every distilling stage shares besides its schedule (``training_keys``): its objective."""

    loss: LossTerms = Field(default_factory=lambda: [LossTerm(name="kd")], description="the distillation "
                            "objective (default: the task's default loss, kd for classification)")


class StageConfig(Strict):
    """What every stage's config shares: its tag. Each stage's folder defines its config (a subclass with
    ``stage: Literal["<name>"]``) and registers it with ``stage_config``; the recipe's ``stages:`` list
    accepts every registered one."""

    stage: str
    order: ClassVar[float] = 0    # where it runs in the flow (prune 0, distill 1, quantize 2, export 3)
    last: ClassVar[bool] = False  # the stage every recipe ends with, exactly once (export)

    def trained_losses(self) -> list[tuple[str, "LossTerms"]]:
        """(key, loss terms) of every objective this stage trains with as configured: what a task checks
        fits its outputs before anything trains. A stage that trains overrides it."""
        return []


STAGE_CONFIGS: Registry[type[StageConfig]] = Registry("stage", RecipeError)


def stage_config(name: str) -> Callable[[type[StageConfig]], type[StageConfig]]:
    """Register a stage's config model under its tag; a recipe validated after this accepts it."""
    def add(model: type[StageConfig]) -> type[StageConfig]:
        STAGE_CONFIGS.register(name)(model)
        if Recipe.__pydantic_complete__:  # a stage registered after recipes were read (a plugin, a test)
            Recipe.model_rebuild(force=True)
        return model

    return add


def stage_order() -> list[str]:
    """The registered stages in the order they run."""
    return sorted(STAGE_CONFIGS, key=lambda name: STAGE_CONFIGS.get(name).order)


class RegisteredStage:
    """The ``stages:`` items: a union, tagged by ``stage``, of every registered stage config, built when a
    recipe is first validated; error locations are pydantic's (``stages.0.quantize.x``). Each stage's folder
    registers its config when ``edgekd.stages`` is imported (``run.recipe.load_recipe``, the one way a
    recipe file is read, imports it); config itself never imports the stages it validates."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        if not STAGE_CONFIGS.names():
            raise RuntimeError("no stage is registered: import edgekd.stages before reading a recipe "
                               "(edgekd.run.recipe.load_recipe does)")
        choices = {name: handler.generate_schema(STAGE_CONFIGS.get(name)) for name in stage_order()}
        return core_schema.tagged_union_schema(choices, discriminator="stage")


BOX_SOURCES = ("yolo", "coco")  # the data sources whose labels are boxes (detection)


class Recipe(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    name: FileName
    description: str = ""
    seed: int = 0
    arch: str | None = Field(None, description="teacher arch spec when --arch is not given")
    arch_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the arch's "
                                      "constructor or factory (e.g. {input_size: 28}); also --arch-arg KEY=VALUE")
    task: str = Field("classification", description="what the model outputs and how it is scored (edgekd list "
                      "tasks): classification (class logits, top-1 accuracy), embedding (scored against the "
                      "teacher's embeddings) or detection (boxes, COCO mAP; the default for yolo and coco data); "
                      "hf: text models get the task's head")
    metric: str | None = Field(None, description="classification: score with this function instead of top-1 "
                               "(package.module:function, given the outputs and labels as arrays, returning a "
                               "number in [0, 1], higher is better)")
    device: str = Field("auto", description="where training runs: auto (CUDA when present), cpu, cuda, cuda:N")
    amp: Literal["bf16", "fp16", "none"] = Field("bf16", description="CUDA autocast precision for training")
    checkpoint_every: int | None = Field(None, ge=1, description="also save the training state every this many "
                                         "steps (not only per epoch), so --resume continues mid-epoch")
    teacher_check: bool = Field(True, description="before anything trains, score the teacher on the validation "
                                "split and stop (exit 2) when it cannot be told from chance: wrong preprocessing or "
                                "class order; false for a teacher that is meant to be random (tests, smoke runs)")
    degraded_below_teacher: float = Field(0.05, ge=0.0, le=1.0, description="a report row whose accuracy is more "
                                          "than this below the teacher's on the same target is marked degraded, "
                                          "not ok")
    data: DataSpec = DataSpec()
    student: StudentSpec = StudentSpec()
    stages: list[RegisteredStage]
    targets: list[str] = ["cpu-onnxruntime", "cpu-openvino"]

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task; known: {', '.join(TASKS.names())}")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        module, _, function = (v or "m:f").partition(":")
        if not module or not function:
            raise ValueError("must be package.module:function")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        low = v.lower()
        if low not in ("auto", "cpu", "cuda") and not (low.startswith("cuda:") and low[5:].isdigit()):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return low

    @model_validator(mode="before")
    @classmethod
    def _task_from_labels(cls, data: Any) -> Any:
        """The task follows what the data's labels are (boxes for yolo and coco, classes otherwise) unless
        the recipe names one, and a named task must score such labels: checked before anything is read."""
        from ..tasks import task_for_labels

        if not isinstance(data, dict):
            return data
        source = data["data"].get("source") if isinstance(data.get("data"), dict) else None
        kind = "boxes" if source in BOX_SOURCES else "classes"
        task = data.get("task")
        if task is None:
            return {**data, "task": task_for_labels(kind)}
        if task in TASKS and TASKS.get(task).label_kind != kind:
            raise ValueError(f"task {task!r} scores data labelled with {TASKS.get(task).label_kind}; data.source "
                             f"{source or 'digits'!r} has {kind} (boxes: {', '.join(BOX_SOURCES)}): use task: "
                             f"{task_for_labels(kind)} or leave task out")
        return data

    @model_validator(mode="after")
    def _stage_order(self) -> "Recipe":
        names = [s.stage for s in self.stages]
        order = stage_order()
        last = [n for n in order if STAGE_CONFIGS.get(n).last]
        if not names or names[-1] not in last or sum(n in last for n in names) != 1:
            raise ValueError(f"stages must end with exactly one {' or '.join(repr(n) for n in last)} (got {names})")
        if len(set(names)) != len(names):
            raise ValueError(f"each stage may appear once (got {names})")
        if names != sorted(names, key=order.index):
            raise ValueError(f"stages must run in the order {' -> '.join(order)} (got {names})")
        return self


# ---------------------------------------------------------------- targets
# Target and LatencySpec are in config/target.py (imported above); reading a target file and checking it
# against its backend's capabilities is ``backends.load_target``.


# ---------------------------------------------------------------- budgets
LatencyStat = Literal["p50", "p90", "p95", "p99", "mean", "max"]


class Budget(Strict):
    """What a variant must meet to pass ``edgekd gate`` (DESIGN.md: budget file)."""

    variant: str = "student-int8"
    max_size_mb: float | None = Field(None, gt=0.0)
    max_accuracy_drop: float | None = Field(None, ge=0.0, le=1.0)
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    max_latency_ms: dict[str, dict[LatencyStat, Annotated[float, Field(gt=0.0)]]] = {}
    machine_id: str | None = Field(None, description="the fingerprint's machine_id the latency limits were set on; "
                                                     "gate refuses latencies measured elsewhere")
    # relative budgets: both sides measured in the same run on the same machine, so they survive a new runner
    max_latency_ratio: dict[str, float] = Field(
        {}, description="target -> the variant's p50 divided by teacher-fp32's p50 on that target in the same run "
                        "must be at most this (0.33: at least 3x faster)")
    max_size_ratio: float | None = Field(None, gt=0.0, description="the variant's size on disk / teacher-fp32's")
    variants: list["Budget"] = Field([], description="budgets of further variants in the same file, each with its "
                                                     "own 'variant' and lines")

    @field_validator("max_latency_ratio")
    @classmethod
    def _positive_ratios(cls, ratios: dict[str, float]) -> dict[str, float]:
        bad = [t for t, r in ratios.items() if not r > 0]
        if bad:
            raise ValueError(f"max_latency_ratio.{bad[0]} must be > 0")
        return ratios

    LIMITS: ClassVar[tuple[str, ...]] = ("max_size_mb", "max_accuracy_drop", "min_accuracy", "max_latency_ms", "max_latency_ratio",
              "max_size_ratio")

    @model_validator(mode="after")
    def _has_a_limit(self) -> "Budget":
        """A budget that limits nothing would pass every run ("0/0 lines met")."""
        if not any(getattr(b, k) not in (None, {}) for b in (self, *self.variants) for k in self.LIMITS):
            raise ValueError(f"the budget sets no limit; give at least one of {', '.join(self.LIMITS)}")
        return self


# ---------------------------------------------------------------- loading
def format_validation_error(path: Path, err: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(model, e["loc"][:-1])
            valid = f"; valid keys: {', '.join(parent.model_fields)}" if parent else ""
            parts.append(f"unknown key '{key}'{valid}")
        elif e["type"] == "missing":
            parts.append(f"missing key '{key}'")
        elif not e["loc"] or e["type"] == "value_error" and isinstance(e.get("input"), dict):
            parts.append(e["msg"].removeprefix("Value error, ") + (f" (in '{key}')" if e["loc"] else ""))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"key '{key}': {msg} (got {e.get('input')!r})")
    return f"{path}: " + "; ".join(parts)


_STAGES = object()  # marks "inside the stages list": the next key is a stage tag


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc``, for listing its valid keys."""
    current: Any = model
    for part in (p for p in loc if not isinstance(p, int)):
        if current is _STAGES:
            current = STAGE_CONFIGS.get(part) if part in STAGE_CONFIGS else None
            continue
        field = current.model_fields.get(part) if current else None
        if field is None:
            return None
        args = getattr(field.annotation, "__args__", (field.annotation,))
        current = _STAGES if part == "stages" else next(
            (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return current if isinstance(current, type) else None


MAX_YAML_BYTES = LIMITS.yaml_bytes       # a recipe, target or budget is a page of text
MAX_YAML_ALIASES = LIMITS.yaml_aliases   # anchors reused a few times are fine; a 1.3 KB "billion laughs" made a 226 MB error


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no executable tags) that refuses documents with more than
    ``MAX_YAML_ALIASES`` aliases: nested aliases expand exponentially when anything walks the data."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen = getattr(self, "aliases_seen", 0) + 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out")
        return super().compose_node(parent, index)

    def get_single_node(self) -> Any:
        """The document's node graph, refused if expanding its aliases makes more than ``yaml_nodes``
        nodes (64 aliases nested 33 deep still made 2^33): counted on the graph, shared nodes once each."""
        node = super().get_single_node()
        sizes: dict[int, int] = {}

        def expanded(n: Any) -> int:
            if id(n) not in sizes:
                sizes[id(n)] = 1  # a node that contains itself counts once (the constructor handles cycles)
                children = ([c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode)
                            else list(n.value) if isinstance(n, yaml.SequenceNode) else [])
                sizes[id(n)] = min(1 + sum(expanded(c) for c in children), LIMITS.yaml_nodes + 1)
            return sizes[id(n)]

        if node is not None and expanded(node) > LIMITS.yaml_nodes:
            raise yaml.YAMLError(f"the document expands to more than {LIMITS.yaml_nodes} values (aliases "
                                 f"repeat what they point to); write it out plainly")
        return node


def read_yaml(path: Path, error: type[EdgekdError]) -> dict[str, Any]:
    """Read a YAML mapping safely (no executable tags, bounded size and aliases), or raise ``error``
    naming the file."""
    if not path.is_file():
        raise error(f"{path}: file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise error(f"{path}: {path.stat().st_size} bytes; a YAML file edgekd reads is at most {MAX_YAML_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); is this a YAML file?") from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise error(f"{path}: nested too deeply to read as YAML") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise error(f"{path}:{line} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _validate(model: type[Strict], data: dict[str, Any], path: Path, error: type[EdgekdError]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(format_validation_error(path, exc, model)) from None


def resolve_file(name_or_path: str | Path, folder: Path, error: type[EdgekdError], kind: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise error(f"{path}: {kind} file not found")
        return path
    builtin = folder / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    known = ", ".join(builtin_names(folder))
    raise error(f"{kind} {str(name_or_path)!r}: not a file and not a built-in {kind} (built-in: {known})")


def builtin_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def read_recipe(name_or_path: str | Path, patch: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Recipe:
    """A recipe file, validated against the stages registered so far (``run.recipe.load_recipe`` registers
    every built-in stage first); ``patch`` edits the raw mapping first (the CLI's overrides, so a recipe
    may leave out what the command line gives, e.g. the data path of ``--data``)."""
    path = resolve_file(name_or_path, RECIPES_DIR, RecipeError, "recipe")
    raw = read_yaml(path, RecipeError)
    return _validate(Recipe, patch(raw) if patch is not None else raw, path, RecipeError)


def load_budget(path: str | Path) -> Budget:
    path = Path(path)
    return _validate(Budget, read_yaml(path, BudgetError), path, BudgetError)


# A pretrained transformer is fine-tuned, not trained: distilling all-MiniLM-L6-v2 at the CNN default
# (lr 3e-3) wrecked what the student started from (issue 25). The range BERT-class distillation uses
# (DistilBERT 5e-4 with large batches, MiniLM 1e-4, TinyBERT 5e-5) and AdamW's usual 0.01 decay.
TEXT_TRAINING = {"lr": 1e-4, "weight_decay": 0.01}


def with_text_training(recipe: Recipe) -> Recipe:
    """``recipe`` with every training schedule that leaves ``lr`` / ``weight_decay`` unset given
    ``TEXT_TRAINING`` (a learning rate only ever lowered to it): the defaults for a text model, whose
    stage defaults are a CNN's. Keys the recipe sets are kept."""

    def settled(config: BaseModel) -> BaseModel:
        update: dict[str, Any] = {}
        for name in type(config).model_fields:
            value = getattr(config, name)
            if isinstance(value, BaseModel):
                new = settled(value)
                if new is not value:
                    update[name] = new
        if isinstance(config, _TrainingKeys):
            if "lr" not in config.model_fields_set and config.lr > TEXT_TRAINING["lr"]:
                update["lr"] = TEXT_TRAINING["lr"]
            if "weight_decay" not in config.model_fields_set:
                update["weight_decay"] = TEXT_TRAINING["weight_decay"]
        return config.model_copy(update=update) if update else config

    return recipe.model_copy(update={"stages": [settled(stage) for stage in recipe.stages]})


def recipe_with(recipe: Recipe, **changes: Any) -> Recipe:
    """A copy of ``recipe`` with top-level fields replaced, re-validated."""
    return Recipe.model_validate({**recipe.model_dump(), **changes})


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
