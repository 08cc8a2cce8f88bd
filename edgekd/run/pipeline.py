"""The only orchestrator: checkpoint -> stages -> artifacts -> backends -> measurements -> report.

``compress`` validates everything (recipe, targets, budget, checkpoint, data) before the first
stage runs, writes ``recipe.resolved.yaml`` (the CLI is sugar over a recipe the user could have
written), and writes each stage only inside ``stages/NN-<stage>/``. A stage's ``stage.json`` is
written last; ``--resume`` reuses every stage whose record matches its config and inputs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..artifacts.artifact import Artifact, config_hash
from ..models.checkpoint import LoadPolicy
from .teacher import check_teacher, extra_teachers, is_hf, load_teacher, teacher_score, teacher_width
from ..config.schema import Budget, Recipe, Target, load_budget
from ..backends import load_target
from ..data import build_splits
from ..data.transforms import arch_preprocess
from ..config.environment import check_environment
from ..fileio import read_json, write_json
from ..report.gate import evaluate_budget, record_verdicts
from ..measure.measurement import BackendPool, latency_probe
from ..measure.targets import measure_models
from ..progress import console
from ..report.build import write_report
from ..artifacts.rundir import RunDirectory, check_free_space, run_dir_path, input_hashes, output_hashes, remove_stale
from ..stages import StageContext
from ..stages.preflight import preflight
from .checks import check_losses_fit, check_names
from .manifest import manifest_fields, publish_models
from .options import CompressOptions, CompressResult
from .recipe import assemble_recipe, checkpoint_of, resolved_text, run_notes
from .stage_loop import RunState, run_stages
from .targets import settle_targets
from ..tasks import task_for
from ..train import distributed
from ..train.device import resolve_device
from ..train.evaluate import predict_logits

def compress(checkpoint: str | Path | None = None, **options: Any) -> CompressResult:
    """Compress ``checkpoint`` (the embedded default when None) as ``edgekd compress`` does; ``options`` are
    ``CompressOptions``' fields by keyword (``recipe=``, ``out=``, ``force=True``, ...)."""
    o = CompressOptions(**options)
    rec = assemble_recipe(o.recipe, o.data, arch=o.arch, arch_args=o.arch_args, device=o.device, targets=o.targets)
    rec, target_objs = settle_targets(rec)
    target_objs = [t.with_latency(**(o.timing or {})) for t in target_objs]
    budget_obj = o.budget if isinstance(o.budget, Budget) or o.budget is None else load_budget(o.budget)
    rec, ckpt = checkpoint_of(rec, Path(checkpoint) if checkpoint is not None else None)

    check_environment()
    ranked = distributed.init_from_env(rec.device)
    run = None
    if distributed.is_main():
        run = RunDirectory.open(run_dir_path(Path(o.out) if o.out is not None else None, rec.name, o.resume),
                                o.resume, o.force)
        run_dir = run.path
    else:  # other torchrun ranks train alongside rank 0 but write only to a scratch folder, silently
        run_dir = Path(tempfile.mkdtemp(prefix=f"edgekd-rank{distributed.rank()}-"))
        console.quiet = True
    try:
        policy = LoadPolicy(trust=o.trust_checkpoint, allow_globals=tuple(o.allow_globals),
                            expect_sha256=o.expect_sha256)
        result = _compress(rec, ckpt, run_dir, run, target_objs, policy, o)
        if result.report is not None and budget_obj is not None:
            result.verdicts = evaluate_budget(result.report, budget_obj)
            record_verdicts(result.run_dir, result.verdicts, f"edgekd compress --budget {o.budget}")
        return result
    except BaseException:
        if run is not None:
            run.abandon()
        raise
    finally:
        if run is not None:
            run.release()
        if ranked:
            if not distributed.is_main():
                shutil.rmtree(run_dir, ignore_errors=True)
            distributed.shutdown()


def _compress(rec: Recipe, ckpt: Path | None, run_dir: Path, run: RunDirectory | None, target_objs: list[Target],
              policy: LoadPolicy, o: CompressOptions) -> CompressResult:
    state, dry_run = _prepare(rec, ckpt, run_dir, policy), o.dry_run
    state.keep_all = o.keep_all
    notes = run_notes(rec, state.loaded.arch, state.ctx.device, target_objs)  # what the run derived
    resolved = resolved_text(rec, state.splits.preprocess, notes)
    console.print(*(line[2:] for line in resolved.splitlines() if line.startswith("# ")), sep="\n")
    console.print("preflight: tracing, pruning graph and ONNX export checked on one sample before training")
    state.extra["preflight_seconds"] = preflight(rec, state.loaded.model, state.splits.example(1),
                                                 state.splits.num_classes, state.ctx.head_width)
    if dry_run:  # every sample decoded before the teacher reads any (a broken file is named, not a crash)
        state.splits.check_every_sample()
    state.extra["teacher_check"] = check_teacher(state.ctx)  # a teacher no better than guessing stops here
    if dry_run:  # every input opened and checked, the stages preflighted; nothing trained or written
        wrote = run.dry_run(resolved) if run is not None else False
        console.print("dry run: checkpoint, teachers, data, targets and stages checked; nothing trained"
                      + ("" if wrote else f"; {run_dir} is an existing run and was left as it was"))
        return CompressResult(run_dir, None, None, wrote)
    state.variants["teacher-fp32"].meta["metrics"]["test_accuracy_torch"] = teacher_score(state.ctx)
    if run is not None:  # only now, every input checked: --force empties, --resume tidies, the recipe is recorded
        run.start(resolved)
    if (run_dir / "manifest.json").is_file():  # until this try completes, report and gate refuse the run
        write_json(run_dir / "manifest.json", {**read_json(run_dir / "manifest.json"), "status": "running"})
    stage_log = run_stages(state, o.resume)
    if not distributed.is_main():
        return CompressResult(run_dir, None, None)
    return CompressResult(run_dir, _finish(state, stage_log, target_objs), None)


def _prepare(rec: Recipe, ckpt: Path | None, run_dir: Path, policy: LoadPolicy) -> RunState:
    """The data and teacher loaded, the teacher variant recorded, the stages' context built, and every
    name the stages will look up (loss modules, extra teachers) checked before anything trains."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device = resolve_device(rec.device, rec.amp)
    splits = build_splits(rec.data, arch_preprocess(rec.arch if ckpt is not None else None), pin_memory=device.cuda)
    arch_args = {**rec.arch_args, "task": rec.task} if is_hf(rec.arch) else rec.arch_args  # rebuilds need the task
    task = task_for(rec.task, rec.metric)
    check_losses_fit(rec, task)  # a recipe's own mistake fails before the teacher runs over any split
    loaded = load_teacher(ckpt, rec.arch, policy, splits, arch_args, task)
    splits.scoring = task.scoring(lambda split: predict_logits(loaded.model, splits, split, device).numpy())
    check_free_space(run_dir, sum(p.numel() * p.element_size() for p in loaded.model.parameters()), len(rec.stages))
    inputs = {"checkpoint": loaded.sha256, **input_hashes(rec.data.path, [path for path, _ in extra_teachers(rec)])}
    # every stage key descends from this one: a changed checkpoint, data file or extra teacher re-runs them
    # the teacher is what load_teacher read: the checkpoint's bytes, its arch spec and arguments, the data
    teacher_hash = config_hash(inputs, rec.data.model_dump(), rec.seed, rec.arch, arch_args, rec.task)
    head = task.head_width(teacher_width(loaded.model, splits), splits.num_classes)  # what students keep
    variants: dict[str, Artifact] = {"teacher-fp32": Artifact(
        "teacher-fp32", "torch", "fp32", loaded.path, "input", None, teacher_hash,
        {"arch": loaded.arch, "arch_kwargs": {"num_classes": head, "in_channels": splits.input_shape[0],
                                              **({"arch_args": arch_args} if arch_args else {})},
         "format": loaded.format, "sha256": loaded.sha256, "trusted": loaded.trusted,
         "metrics": {}})}  # its test score when the stages run (``teacher_score``): a dry run never needs it
    pool = BackendPool()

    def latency_probe_for(name: str):
        target = load_target(name)
        return latency_probe(target, pool), target.model_dump()

    ctx = StageContext(run_dir, run_dir, rec, splits, loaded.model, {"teacher-fp32": loaded.model},
                       teacher_hash=teacher_hash, trust_checkpoint=policy.trust, allow_globals=policy.allow_globals,
                       latency_probe=latency_probe_for, device=device,
                       head_width=head)
    for p in ctx.teacher.parameters():
        p.requires_grad_(False)
    check_names(rec, ctx, task)
    extra = {"task": task.describe(), "data": splits.describe(), "training_device": device.to_json(), "preflight_seconds": None,
             "inputs": inputs, "seed": rec.seed, "command": sys.argv, "started": started,
             "load_policy": {"trust_checkpoint": policy.trust, "allow_globals": list(policy.allow_globals),
                             "expected_sha256": policy.expect_sha256}}
    return RunState(rec, run_dir, splits, loaded, variants, ctx, pool, latency_probe_for, extra)


def _finish(state: RunState, stage_log: list[dict[str, Any]], targets: list[Target]) -> dict[str, Any]:
    """The exported files published, the manifest written, every model measured on every target, and the
    report: the run directory complete."""
    run_dir = state.run_dir
    onnx_variants = [a for a in state.variants.values() if a.kind == "onnx"]
    # --resume: files of variants and targets this recipe no longer makes go, or report and gate would show them
    remove_stale(run_dir / "models", lambda f: f.split(".", 1)[0] in {a.variant for a in onnx_variants})
    remove_stale(run_dir / "measurements",
                 lambda f: f in {f"{a.variant}@{t.name}.json" for a in onnx_variants for t in targets})
    models = publish_models(run_dir, onnx_variants)
    manifest = manifest_fields(state.rec, state.loaded, state.variants, models, stage_log, run_dir, state.extra)
    write_json(run_dir / "manifest.json", {**manifest, "status": "measuring"})
    measure_models(run_dir, models, targets, state.splits, state.pool)
    complete = {**manifest, "outputs": output_hashes(run_dir), "status": "complete",
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(run_dir / "manifest.json", complete)
    return write_report(run_dir, complete)  # the hashes were just taken: not read back and hashed again
