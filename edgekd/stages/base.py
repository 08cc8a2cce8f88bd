"""What every stage shares: the run context, the registry, and getting models out of artifacts.

A stage is a function ``(variants, config, ctx) -> list[Artifact]``: it reads the variants made so
far (the last one is the model it works on), writes only inside ``ctx.stage_dir``, and returns the
new variants. Stages never see backends (latency-driven pruning times candidates through
``latency_probe``, a plain function the pipeline hands in). Ordering rules live in ``config.Recipe``
(prune -> distill -> quantize -> export).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..artifacts.artifact import Artifact
from ..config.schema import LossTerm, Recipe, TrainingConfig, TrainSpec
from ..data import Splits
from ..errors import InputError, RecipeError, StageError
from ..registry import Registry
from ..train.device import CPU, Device
from ..train.loop import FitResult, LoopSettings, fit
from ..train.objective import Objective, build_objective
from ..train.teacher_outputs import TeacherOutputs, TeacherRun


class RecipeReads:
    """The recipe as a stage sees it (``ctx.recipe``): reads pass through, and every top-level field a
    stage reads is noted. The stage's resume record keeps a hash of each field it read, so ``--resume``
    re-runs it when any of them changed: the key follows what the code actually reads, not a list of
    fields someone remembered (the ``student:`` block was missing from such a list, and a changed
    student was silently reused)."""

    def __init__(self, recipe: Recipe) -> None:
        object.__setattr__(self, "_recipe", recipe)
        object.__setattr__(self, "_read", set())

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._recipe, name)
        if name in type(self._recipe).model_fields:
            self._read.add(name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a stage does not change the recipe")

    def read_fields(self) -> list[str]:
        return sorted(self._read)


def recipe_field_hashes(recipe: Recipe, fields: list[str]) -> dict[str, str]:
    """``{field: hash of its resolved value}`` for the recipe fields a stage read."""
    from ..artifacts.artifact import config_hash

    dumped = recipe.model_dump(mode="json")
    return {f: config_hash(dumped.get(f)) for f in fields}


@dataclass
class StageContext:
    """Everything a stage may use besides its own config; built once per run by the pipeline."""

    run_dir: Path
    stage_dir: Path
    recipe: Recipe
    splits: Splits
    teacher: nn.Module
    models: dict[str, nn.Module] = field(default_factory=dict)  # in-memory models by variant
    teacher_hash: str = ""          # identifies teacher + data: what cached teacher outputs are valid for
    trust_checkpoint: bool = False  # applies to extra teachers named in a recipe, as to the main one
    allow_globals: tuple[str, ...] = ()  # likewise --allow-global
    stage_key: str = ""             # hash of this stage's config and inputs (its resume key)
    stage_key_path: str = "stages"  # where this stage sits in the recipe, for error messages
    # target name -> (p50 ms of an ONNX file there, the target's settings): latency-driven pruning's
    # only window onto a backend, given by the pipeline
    latency_probe: Callable[[str], tuple[Callable[[Path], float], dict[str, Any]]] | None = None
    device: Device = CPU            # where training runs (recipe ``device``)
    # the last teacher-output cache made, so a QAT stage reuses distill's (one run's, never a global)
    teacher_memo: dict = field(default_factory=dict)
    # the output width every student keeps (the task's ``head_width``): layers producing it are never pruned
    head_width: int = 0
    # the resumable training states this stage's training wrote (``train``): the run deletes them once the
    # stage is recorded, whatever a stage names them
    state_files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.head_width = self.head_width or self.splits.num_classes

    def objective(self, terms: list[LossTerm], key: str, student: nn.Module,
                  teacher: bool = True) -> tuple[Objective, TeacherOutputs | None]:
        """A stage's objective over the run's data and teacher (``teacher=False``: cross-entropy only)."""
        if not teacher:
            return Objective.cross_entropy(), None
        run = TeacherRun(self.teacher_hash, augmented=self.recipe.data.augment.active, memo=self.teacher_memo,
                         cache_dir=self.run_dir / "cache", device=self.device)
        return build_objective(terms, key, student, self.teacher, self.splits, run, self.load_extra_teacher)

    def train(self, model: nn.Module, objective: Objective, outputs: TeacherOutputs | None, spec: TrainSpec, *,
              label: str, augment: bool = True, state_file: str = "train_state.pt") -> FitResult:
        """The one way a stage trains: the run's data, seed, device, augmentation and resumable state."""
        self.state_files.append(self.stage_dir / state_file)
        settings = LoopSettings(seed=self.recipe.seed, device=self.device,
                                augment=self.recipe.data.augment if augment else None,
                                state_path=self.stage_dir / state_file, state_key=self.stage_key,
                                checkpoint_every=self.recipe.checkpoint_every)
        return fit(model, self.splits, objective, spec, settings, label=label, teacher=outputs)

    def load_extra_teacher(self, checkpoint: str, arch: str | None) -> nn.Module:
        """Another teacher named in a loss (multi-teacher), loaded as safely as the main one."""
        from ..models.checkpoint import LoadPolicy, load_checkpoint

        policy = LoadPolicy(trust=self.trust_checkpoint, allow_globals=self.allow_globals)
        model = load_checkpoint(checkpoint, arch, policy=policy, num_classes=self.head_width,
                                in_channels=self.splits.input_shape[0]).model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def model(self, variants: dict[str, Artifact], name: str) -> nn.Module:
        """The torch module of a variant: from memory, else rebuilt from its artifact (resume)."""
        if name not in self.models:
            art = variants[name]
            if art.kind not in REBUILDERS:
                raise StageError(f"variant {name!r} is a {art.kind} artifact, not a torch model")
            self.models[name] = REBUILDERS.get(art.kind)(art, lambda: self.model(variants, art.parent or ""),
                                                         self.splits.example(1, "test"))
        return self.models[name]


# An artifact kind's rebuilder: (the artifact, a function giving its parent's module, the example input the
# stages were given) -> its torch module; registered by the stage folder that makes that kind, so a resumed
# run reloads what any stage saved, made the way that stage made it.
Rebuild = Callable[[Artifact, Callable[[], nn.Module], torch.Tensor], nn.Module]
REBUILDERS: Registry[Rebuild] = Registry("artifact kind", StageError)

StageFn = Callable[[dict[str, Artifact], Any, StageContext], list[Artifact]]
STAGES: Registry[StageFn] = Registry("stage", RecipeError)


@dataclass(frozen=True)
class TargetFacts:
    """A target as a stage may know it: its name and what its backend declares (``backends.Capabilities``),
    as data. Stages never import a backend; the run wing hands these to each stage's resolver."""

    name: str
    backend: str
    file_suffix: str   # the file its backend runs: ".onnx", or ".pt2" for the torch baseline
    int8_input: str    # "signed": INT8 activations only signed with zero point 0 (TensorRT); else "any"
    hardswish: str     # the Hardswish form it runs fastest: "split" or "fused"


# A stage's resolver settles what its config leaves to the targets ("auto", None) before any stage runs,
# so the choice lands in recipe.resolved.yaml and in the stage's resume key: (config, targets, where in
# the recipe, e.g. "stages.2") -> the config. A stage without one keeps its config as written.
StageResolver = Callable[[Any, list[TargetFacts], str], Any]
RESOLVERS: Registry[StageResolver] = Registry("stage resolver", RecipeError)


def resolve_stages(recipe: Recipe, targets: list[TargetFacts], default_loss: str = "kd") -> Recipe:
    """The recipe with every stage's config settled by its stage's resolver, and every training stage
    that names no loss given the task's ``default_loss`` (an embedding run distills embeddings)."""
    stages = []
    for i, spec in enumerate(recipe.stages):
        if (isinstance(spec, TrainingConfig) and "loss" not in spec.model_fields_set
                and [t.name for t in spec.loss] != [default_loss]):
            spec = spec.model_copy(update={"loss": [LossTerm(name=default_loss)]})
        stages.append(RESOLVERS.get(spec.stage)(spec, targets, f"stages.{i}") if spec.stage in RESOLVERS else spec)
    return recipe.model_copy(update={"stages": stages})


def current(variants: dict[str, Artifact]) -> Artifact:
    """The variant a transforming stage works on: the most recent torch artifact."""
    return [a for a in variants.values() if a.kind != "onnx"][-1]


def role_of(variant: str) -> str:
    """``student-fp32`` -> ``student``."""
    return variant.rsplit("-", 1)[0]


@dataclass
class Preview:
    """What preflight knows of a run before anything trains: the model each stage will see (the teacher,
    or what an earlier stage's preflight handed on: a distill stage's ``arch`` student), and whether an
    earlier stage has already made the student (a pruned teacher keeps the teacher's module names)."""

    recipe: Recipe
    teacher: nn.Module
    example: torch.Tensor   # one real preprocessed sample (batch 1; batch 2 where BatchNorm trains)
    num_classes: int
    model: nn.Module
    student_made: bool = False
    head_width: int = 0  # the output width students keep (``StageContext.head_width``); 0: num_classes

    def __post_init__(self) -> None:
        self.head_width = self.head_width or self.num_classes


# A stage's preflight runs one batch through what the stage will do to ``preview.model``, in seconds, so a
# model that cannot be traced, pruned or exported fails before hours of training: (config, preview, where
# in the recipe) -> None, raising ``preflight_error``. A stage without one is not preflighted.
StagePreflight = Callable[[Any, Preview, str], None]
PREFLIGHTS: Registry[StagePreflight] = Registry("stage preflight", RecipeError)


def preflight_error(where: str, stage: str, cause: str, remedy: str) -> InputError:
    """The user's input (exit 2), naming the stage, the cause and the remedy."""
    return InputError(f"preflight {where} ({stage}): {cause}; {remedy}")
