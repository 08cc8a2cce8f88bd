"""The recipe settled against its targets: each target checked to run here, its backend's capabilities
handed to the stages as data (``stages.base.TargetFacts``), and each stage's resolver applied."""

from __future__ import annotations

from ..backends import BACKENDS, check_runs_here
from ..config.schema import Recipe, Target
from ..backends import load_target
from ..stages.base import TargetFacts, resolve_stages
from ..tasks import TASKS


def target_facts(targets: list[Target]) -> list[TargetFacts]:
    """What each target's backend declares, as the data a stage may read."""
    facts = []
    for t in targets:
        backend = BACKENDS.get(t.backend)
        facts.append(TargetFacts(name=t.name, backend=t.backend, file_suffix=backend.file_suffix,
                                 int8_input=backend.capabilities.int8_input,
                                 hardswish=backend.capabilities.hardswish))
    return facts


def settle_targets(recipe: Recipe) -> tuple[Recipe, list[Target]]:
    """The recipe's targets, loaded and checked to run here, and the recipe its stages' resolvers settled
    (with the task's default loss where a training stage names none)."""
    targets = [check_runs_here(load_target(t)) for t in recipe.targets]
    return resolve_stages(recipe, target_facts(targets), TASKS.get(recipe.task).default_loss), targets
