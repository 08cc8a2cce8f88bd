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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from ..version import __version__
from ..artifacts.artifact import Artifact, config_hash, in_run, read_record, write_record
from ..models.checkpoint import LoadedCheckpoint, LoadPolicy, load_checkpoint, load_hf_checkpoint
from ..config import (Budget, DataSpec, DistillConfig, PruneConfig, Recipe, StudentSpec, Target, dump_recipe,
                      load_budget, load_recipe, load_target, recipe_with)
from ..data import Splits, build_splits
from ..data.transforms import arch_preprocess
from ..environment import check_environment
from ..errors import CheckpointError, DataError, InputError, RecipeError, first_line
from ..fileio import atomic_path, read_json, write_json, write_text
from ..report.gate import Verdict, evaluate_budget
from ..stages.export.int8_layouts import layout_path
from ..measure.int8_verdict import fp32_counterpart, judge, time_against_fp32
from ..backends import BACKENDS
from ..measure.measurement import BackendPool, add_repeats, empty_result, latency_probe, measure
from ..names import checked_file_name
from ..progress import console
from ..report.build import write_report
from ..artifacts.rundir import RunDirectory, check_free_space, input_hashes, output_hashes, remove_stale
from ..stages import STAGES, StageContext
from ..stages.base import RecipeReads, recipe_field_hashes
from ..stages.distill.stage import check_loss_names
from ..stages.preflight import preflight
from .targets import settle_targets
from ..train import distributed
from ..train.device import resolve_device
from ..train.evaluate import accuracy, predict_logits

DEFAULT_RUNS_DIR = Path("runs")


@dataclass
class CompressResult:
    run_dir: Path
    report: dict[str, Any] | None
    verdicts: list[Verdict] | None
    wrote_recipe: bool = False  # a dry run: whether it wrote recipe.resolved.yaml (never into an existing run)


DATA_FORMS = "digits, synthetic, npz:PATH (or PATH.npz), imagefolder:DIR, hf:PATH|NAME or package.module:factory"


def parse_data_spec(spec: str, base: dict[str, Any]) -> dict[str, Any]:
    """``--data``: ``digits``, ``synthetic``, ``npz:PATH`` or a bare ``PATH.npz``, ``imagefolder:DIR``,
    ``hf:PATH`` (or a cached dataset name), or ``package.module:factory``, applied to the recipe's
    raw ``data:`` mapping ``base``: its other keys (batch size, split, preprocess) are kept, its source
    and path replaced."""
    kind, _, rest = spec.partition(":")
    if spec.endswith(".npz") and not rest:
        kind, rest = "npz", spec
    if kind in ("digits", "synthetic") and not rest:
        source, path = kind, None
    elif kind in ("npz", "imagefolder", "hf") and rest:
        source, path = kind, rest
    elif rest.isidentifier() and all(part.isidentifier() for part in kind.split(".")):
        source, path = "factory", spec
    else:
        raise DataError(f"--data {spec!r}: expected {DATA_FORMS}")
    data = {**base, "source": source, "path": path}
    if source not in ("digits", "synthetic"):
        data.pop("channels", None)
    try:
        DataSpec.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"--data {spec!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return data


def _run_dir_path(out: Path | None, name: str, resume: bool) -> Path:
    """``--out``, or ``runs/<recipe name>`` (numbered past existing ones unless resuming)."""
    if out is not None:
        return out
    out, n = DEFAULT_RUNS_DIR / name, 2
    while out.exists() and not resume:
        out, n = DEFAULT_RUNS_DIR / f"{name}{n}", n + 1
    return out


def _load_teacher(checkpoint: Path | None, arch: str | None, policy: LoadPolicy, splits: Splits,
                  arch_args: dict[str, Any]) -> LoadedCheckpoint:
    from ..models.default import ARCH, default_teacher

    if checkpoint is None:
        checkpoint, arch = default_teacher(), arch or ARCH
    if is_hf(arch):
        task = arch_args.get("task", "classification")
        loaded = load_hf_checkpoint(checkpoint, arch, task=task, num_classes=splits.num_classes, policy=policy)
        return _checked_teacher(loaded, checkpoint, splits, embedding=task == "embedding")
    try:
        loaded = load_checkpoint(checkpoint, arch, policy=policy, num_classes=splits.num_classes,
                                 in_channels=splits.input_shape[0], arch_args=arch_args)
    except CheckpointError as exc:
        suspect = _labels_with_gaps(splits)
        if suspect and "shape mismatch" in str(exc):  # a stray label is the data's fault, not the checkpoint's
            raise DataError(suspect) from None
        raise
    return _checked_teacher(loaded, checkpoint, splits)


EMBEDDING_LOSSES = ("embedding-cosine", "minilm", "minilm-v2", "tinybert-hidden", "hint")


def _check_embedding_losses(spec: Any, i: int) -> None:
    """An embedding run's models output embeddings, not class logits, and its data has no labels: a logit
    loss there (``kd``, the default) would soften embedding dimensions as if they were classes."""
    trains = [("loss", getattr(spec, "loss", None))] if getattr(spec, "mode", "qat") == "qat" else []
    recovery = getattr(spec, "recovery", None)
    if recovery is not None and recovery.loss:
        trains.append(("recovery.loss", recovery.loss))
    for where, terms in trains:
        for j, term in enumerate(terms or []):
            if term.name not in EMBEDDING_LOSSES:
                raise RecipeError(f"stages.{i}.{where}.{j}: {term.name!r} matches class logits; an embedding run "
                                  f"trains with {', '.join(EMBEDDING_LOSSES)} (e.g. loss: [{{name: "
                                  f"embedding-cosine}}])")


def is_hf(arch: str | None) -> bool:
    return bool(arch) and arch.startswith("hf:")


def _checked_teacher(loaded: LoadedCheckpoint, checkpoint: Path, splits: Splits,
                     embedding: bool = False) -> LoadedCheckpoint:
    """The teacher run on one test sample: it must take the data's inputs and (unless it outputs
    embeddings) give one logit per class."""
    model = loaded.model.eval()
    try:
        with torch.no_grad():
            out = model(splits.example(1, "test"))
    except Exception as exc:  # noqa: BLE001 - any failure here is a shape/arch mismatch with the data
        raise CheckpointError(f"{checkpoint}: the model does not accept the data's input shape "
                              f"{(1, *splits.input_shape)} ({first_line(exc)})") from None
    if out.ndim != 2 or (out.shape[1] != splits.num_classes and not embedding):
        raise CheckpointError(f"{checkpoint}: the model outputs shape {tuple(out.shape)}, but the data has "
                              f"{splits.num_classes} classes")
    return loaded


def _labels_with_gaps(splits: Splits) -> str | None:
    """A message about the data when its class count (the largest label + 1) is not backed by its labels:
    label 99 among 0..3 makes 100 "classes" and any 4-class checkpoint look wrong."""
    used = sorted(set(torch.cat([splits.labels(s) for s in ("train", "val", "test")]).tolist()))
    if len(used) >= splits.num_classes:
        return None
    below = f"0..{used[-2]}" if len(used) > 1 else "none"
    return (f"data: label {used[-1]} is out of range of the other labels ({below}, {len(used)} distinct values): "
            f"the data then has {splits.num_classes} classes, more than the model was trained for; fix that label")


def compress(checkpoint: str | Path | None = None, *, arch: str | None = None,
             arch_args: dict[str, Any] | None = None, recipe: str | Path | Recipe = "default",
             targets: list[str] | None = None, data: str | None = None, out: str | Path | None = None,
             budget: str | Path | Budget | None = None, trust_checkpoint: bool = False, dry_run: bool = False,
             resume: bool = False, force: bool = False, device: str | None = None,
             allow_globals: tuple[str, ...] = (), expect_sha256: str | None = None) -> CompressResult:
    if isinstance(recipe, Recipe):
        rec = recipe_with(recipe, data=parse_data_spec(data, recipe.data.model_dump(exclude_unset=True))) \
            if data is not None else recipe
    else:  # --data edits the file's raw mapping, so the file may leave out what --data gives
        def with_data(raw: dict[str, Any]) -> dict[str, Any]:
            base = raw.get("data")
            return {**raw, "data": parse_data_spec(data, base if isinstance(base, dict) else {})}

        rec = load_recipe(recipe, with_data if data is not None else None)
    changes: dict[str, Any] = {}
    if arch is not None:
        changes["arch"] = arch
    if arch_args:
        changes["arch_args"] = {**rec.arch_args, **arch_args}
    if device is not None:
        changes["device"] = device
    if targets:
        changes["targets"] = list(targets)
    if changes:
        try:
            rec = recipe_with(rec, **changes)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise InputError(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}") from None
    rec, target_objs = settle_targets(rec)
    budget_obj = budget if isinstance(budget, Budget) or budget is None else load_budget(budget)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if is_hf(rec.arch):  # a Hugging Face folder is the checkpoint itself
        folder = Path(rec.arch[3:])
        if ckpt is not None and ckpt.resolve() != folder.resolve():
            raise InputError(f"{ckpt}: with --arch {rec.arch} the checkpoint is that folder; leave CHECKPOINT out")
        ckpt = folder
        if rec.data.source == "text" and rec.data.tokenizer is None:  # its own tokenizer, unless told otherwise
            rec = recipe_with(rec, data=rec.data.model_copy(update={"tokenizer": str(folder)}))
    elif ckpt is not None and not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")

    check_environment()
    ranked = distributed.init_from_env(rec.device)
    run = None
    if distributed.is_main():
        run = RunDirectory.open(_run_dir_path(Path(out) if out is not None else None, rec.name, resume), resume, force)
        run_dir = run.path
    else:  # other torchrun ranks train alongside rank 0 but write only to a scratch folder, silently
        run_dir = Path(tempfile.mkdtemp(prefix=f"edgekd-rank{distributed.rank()}-"))
        console.quiet = True
    try:
        policy = LoadPolicy(trust=trust_checkpoint, allow_globals=tuple(allow_globals), expect_sha256=expect_sha256)
        return _compress(rec, ckpt, run_dir, run, target_objs, budget_obj, policy, dry_run, resume)
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
              budget_obj: Budget | None, policy: LoadPolicy, dry_run: bool, resume: bool) -> CompressResult:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    device = resolve_device(rec.device, rec.amp)
    splits = build_splits(rec.data, arch_preprocess(rec.arch if ckpt is not None else None), pin_memory=device.cuda)
    arch_args = {**rec.arch_args, "task": rec.task} if is_hf(rec.arch) else rec.arch_args  # rebuilds need the task
    loaded = _load_teacher(ckpt, rec.arch, policy, splits, arch_args)
    if is_hf(rec.arch) and rec.task == "embedding":  # every model is scored against the teacher's embeddings
        splits.embedding_targets = {s: predict_logits(loaded.model, splits, s, device) for s in ("val", "test")}
    check_free_space(run_dir, sum(p.numel() * p.element_size() for p in loaded.model.parameters()), len(rec.stages))
    inputs = {"checkpoint": loaded.sha256, **input_hashes(rec.data.path, [path for path, _ in extra_teachers(rec)])}
    # every stage key descends from this one: a changed checkpoint, data file or extra teacher re-runs them
    # the teacher is what _load_teacher read: the checkpoint's bytes, its arch spec and arguments, the data
    teacher_hash = config_hash(inputs, rec.data.model_dump(), rec.seed, rec.arch, arch_args, rec.task)
    variants: dict[str, Artifact] = {"teacher-fp32": Artifact(
        "teacher-fp32", "torch", "fp32", loaded.path, "input", None, teacher_hash,
        {"arch": loaded.arch, "arch_kwargs": {"num_classes": splits.num_classes, "in_channels": splits.input_shape[0],
                                              **({"arch_args": arch_args} if arch_args else {})},
         "format": loaded.format, "sha256": loaded.sha256, "trusted": loaded.trusted,
         "metrics": {"test_accuracy_torch": accuracy(loaded.model, splits, "test")}})}
    pool = BackendPool()

    def latency_probe_for(name: str):
        target = load_target(name)
        return latency_probe(target, pool), target.model_dump()

    ctx = StageContext(run_dir, run_dir, rec, splits, loaded.model, {"teacher-fp32": loaded.model},
                       teacher_hash=teacher_hash, trust_checkpoint=policy.trust, allow_globals=policy.allow_globals,
                       latency_probe=latency_probe_for,
                       device=device)
    for p in ctx.teacher.parameters():
        p.requires_grad_(False)

    for i, spec in enumerate(rec.stages):  # a wrong module name fails now, not after earlier stages trained
        pruned_before = any(isinstance(s, PruneConfig) for s in rec.stages[:i])
        if isinstance(spec, DistillConfig):
            check_loss_names(spec.loss, f"stages.{i}.loss", StudentSpec(width=1.0) if pruned_before else rec.student,
                             loaded.model, splits.num_classes, splits.input_shape[0])
        if isinstance(spec, PruneConfig) and spec.recovery.loss:  # a pruned model keeps the teacher's names
            check_loss_names(spec.recovery.loss, f"stages.{i}.recovery.loss", StudentSpec(width=1.0), loaded.model,
                             splits.num_classes, splits.input_shape[0])
        if splits.embedding_targets is not None:
            _check_embedding_losses(spec, i)
    for path, arch in extra_teachers(rec):  # found before the first stage trains, not after distillation
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: teacher checkpoint file not found (a multi-teacher loss's teachers:)")
        ctx.load_extra_teacher(path, arch)
    console.print("preflight: tracing, pruning graph and ONNX export checked on one sample before training")
    checks = preflight(rec, loaded.model, splits.example(1), splits.num_classes)
    if dry_run:  # every input opened and checked, the stages preflighted; nothing trained or written
        splits.check_every_sample()
        wrote = run.dry_run(dump_recipe(rec)) if run is not None else False
        console.print("dry run: checkpoint, teachers, data, targets and stages checked; nothing trained"
                      + ("" if wrote else f"; {run_dir} is an existing run and was left as it was"))
        return CompressResult(run_dir, None, None, wrote)
    if run is not None:  # only now, every input checked: --force empties, --resume tidies, the recipe is recorded
        run.start(dump_recipe(rec))
    for stale in ("report.json", "report.md", "report.html", "tradeoff.png"):  # from an earlier, finished try
        (run_dir / stale).unlink(missing_ok=True)
    if (run_dir / "manifest.json").is_file():  # until this try completes, report and gate refuse the run
        write_json(run_dir / "manifest.json", {**read_json(run_dir / "manifest.json"), "status": "running"})
    stage_log = []
    whole_recipe = config_hash(rec.model_dump(mode="json", exclude={"name", "description", "targets"}))
    for i, spec in enumerate(rec.stages):
        folder = run_dir / "stages" / f"{i:02d}-{spec.stage}"
        key = config_hash(spec.model_dump(), [a.config_hash for a in variants.values()], __version__)
        made, why = read_record(folder, key, lambda reads: changed_reads(reads, rec)) if resume else (None, "")
        reused = made is not None
        if made is None:
            again = f" (again: {why})" if resume and why != "not finished" else ""
            console.print(f"stage {i + 1}/{len(rec.stages)}: {spec.stage}{again}", style="bold")
            if folder.exists() and (not resume or why != "not finished"):  # a killed stage keeps its training state
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            # a killed stage's training state resumes only under the very same recipe (its reads are not
            # known until it finishes)
            ctx.stage_dir, ctx.stage_key, ctx.stage_key_path = folder, config_hash(key, whole_recipe), f"stages.{i}"
            ctx.recipe, probed = RecipeReads(rec), {}
            ctx.latency_probe = recorded_probe(latency_probe_for, probed)
            made = STAGES.get(spec.stage)(variants, spec, ctx)
            write_record(folder, key, made, {"recipe": recipe_field_hashes(rec, ctx.recipe.read_fields()),
                                             "targets": probed})
        else:
            console.print(f"stage {i + 1}/{len(rec.stages)}: {spec.stage} (resumed from {folder})")
        stage_log.append({"stage": spec.stage, "folder": str(folder.relative_to(run_dir)), "reused": reused,
                          "outputs": [a.variant for a in made]})
        for art in made:
            variants[art.variant if art.kind != "onnx" else f"{art.variant}.onnx"] = art

    if not distributed.is_main():
        return CompressResult(run_dir, None, None)
    onnx_variants = [a for a in variants.values() if a.kind == "onnx"]
    # --resume: files of variants and targets this recipe no longer makes go, or report and gate would show them
    remove_stale(run_dir / "models", lambda f: f.split(".", 1)[0] in {a.variant for a in onnx_variants})
    remove_stale(run_dir / "measurements",
                 lambda f: f in {f"{a.variant}@{t.name}.json" for a in onnx_variants for t in target_objs})
    models = _publish_models(run_dir, onnx_variants)
    extra = {"data": splits.describe(), "training_device": device.to_json(), "preflight_seconds": checks,
             "inputs": inputs, "seed": rec.seed, "command": sys.argv, "started": started,
             "load_policy": {"trust_checkpoint": policy.trust, "allow_globals": list(policy.allow_globals),
                             "expected_sha256": policy.expect_sha256}}
    manifest = _manifest(rec, loaded, variants, models, stage_log, run_dir, extra)
    write_json(run_dir / "manifest.json", {**manifest, "status": "measuring"})
    _measure_all(run_dir, models, target_objs, splits, pool)
    complete = {**manifest, "outputs": output_hashes(run_dir), "status": "complete",
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(run_dir / "manifest.json", complete)
    report = write_report(run_dir, complete)  # the hashes were just taken: not read back and hashed again
    verdicts = evaluate_budget(report, budget_obj) if budget_obj is not None else None
    return CompressResult(run_dir, report, verdicts)


def recorded_probe(probe_for: Any, probed: dict[str, str]) -> Any:
    """``latency_probe`` that notes a hash of each target's settings it handed a stage."""
    def probe(name: str):
        timed, settings = probe_for(name)
        probed[name] = config_hash(settings)
        return timed, settings

    return probe


def changed_reads(reads: dict[str, Any], rec: Recipe) -> str | None:
    """Why a finished stage's recorded reads no longer hold (a recipe field or a target's settings it
    read has another value now), or None when they all do."""
    now = recipe_field_hashes(rec, list(reads.get("recipe", {})))
    for name, digest in reads.get("recipe", {}).items():
        if now[name] != digest:
            return f"recipe '{name}' changed since it ran"
    for name, digest in reads.get("targets", {}).items():
        try:
            current = config_hash(load_target(name).model_dump())
        except InputError:
            return f"target {name} it timed on is gone"
        if current != digest:
            return f"target {name} it timed on changed"
    return None


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


def _publish_models(run_dir: Path, onnx_artifacts: list[Artifact]) -> dict[str, Artifact]:
    """Copy each exported file to ``models/<variant>.onnx`` (the run directory's contract), and its
    torch.export program, where there is one, to ``models/<variant>.pt2`` (for torch targets)."""
    published = {}
    for art in onnx_artifacts:
        dest = run_dir / "models" / f"{art.variant}.onnx"
        with atomic_path(dest) as tmp:
            shutil.copyfile(art.path, tmp)
        meta = dict(art.meta)
        layouts = {}
        for layout, source in meta.get("layouts", {}).items():  # each runtime's INT8 file, beside the main one
            copy = layout_path(dest, layout)
            with atomic_path(copy) as tmp:
                shutil.copyfile(source, tmp)
            layouts[layout] = str(copy.relative_to(run_dir))
        meta["layouts"] = layouts
        if meta.get("program"):
            program = run_dir / "models" / f"{art.variant}.pt2"
            with atomic_path(program) as tmp:
                shutil.copyfile(meta["program"], tmp)
            meta["program"] = str(program.relative_to(run_dir))
        published[art.variant] = Artifact(art.variant, art.kind, art.precision, str(dest.relative_to(run_dir)),
                                          art.stage, art.parent, art.config_hash, meta)
    return published


def installed_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Each package's installed version, read from its metadata (importing openvino only to ask its
    version cost a second, and failed a run on a machine whose targets never use it); None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _manifest(rec: Recipe, loaded: LoadedCheckpoint, variants: dict[str, Artifact], models: dict[str, Artifact],
              stage_log: list[dict[str, Any]], run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "edgekd.manifest/1",
        "edgekd": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": rec.name,
        "checkpoint": {"path": loaded.path, "sha256": loaded.sha256, "format": loaded.format,
                       "arch": loaded.arch, "trusted_checkpoint": loaded.trusted},
        "versions": installed_versions(("torch", "onnx", "onnxruntime", "openvino", "brevitas")),
        "stages": stage_log,
        "artifacts": [in_run(a.to_json(), run_dir) for a in variants.values()],
        "models": {name: a.to_json() for name, a in models.items()},
        **extra,
    }


def _measure_all(run_dir: Path, models: dict[str, Artifact], targets: list[Target], splits: Splits,
                 pool: BackendPool) -> None:
    def test_batches():
        return splits.arrays("test")

    seq = getattr(splits.preprocess, "max_length", None)  # text: latency at the recipe's sequence length
    targets_by_split = splits.embedding_targets or {}
    teacher_embeddings = targets_by_split["test"].numpy() if "test" in targets_by_split else None
    for target in targets:
        results, files = {}, {}
        for name, art in models.items():
            console.print(f"measure {name} on {target.name} ({target.backend}, {target.device})")
            ref = art.meta.get("reference_logits")
            reference = np.load(ref) if ref and Path(ref).is_file() else None
            suffix = BACKENDS.get(target.backend).file_suffix  # the torch baseline runs the .pt2 program
            written = art.meta.get("layouts", {})
            onnx_file = next((written[k] for k in pool.get(target.backend).int8_layouts(target) if k in written), art.path)
            path = {".onnx": onnx_file, ".pt2": art.meta.get("program")}.get(suffix)
            if path is None:
                result = empty_result(name, art.precision, target, None, f"{name} has no {suffix} file "
                                                                         f"(torch programs are made for FP32 variants)")
            else:
                files[name] = run_dir / path
                result = measure(files[name], name, art.precision, target, pool, test_batches,
                                 splits.size("test"), reference, seq=seq, embedding_reference=teacher_embeddings)
            results[name] = result
        if target.latency.repeats > 1:  # latency only, in rounds over the variants
            timed = [n for n in results if n in files]
            add_repeats([results[n] for n in timed], [[measure(files[n], n, results[n]["precision"], target, pool, seq=seq)
                                                       for n in timed] for _ in range(target.latency.repeats - 1)])
        for name, result in results.items():
            result = judge(result, _versus_fp32(name, results, files, target, pool, seq), target.latency.int8_max_ratio)
            write_json(run_dir / "measurements" / checked_file_name(f"{name}@{target.name}.json", "measurement of"),
                       result)


def _versus_fp32(name: str, results: dict[str, dict[str, Any]], files: dict[str, Path], target: Target,
                 pool: BackendPool, seq: int | None = None) -> dict[str, Any] | None:
    """An ok INT8 row's latency against its FP32 variant's file, timed interleaved on ``target``."""
    row = results[name]
    fp32 = fp32_counterpart(name, list(results))
    if row["status"] != "ok" or row["precision"] != "int8" or fp32 is None or results[fp32]["status"] != "ok":
        return None
    backend = pool.get(target.backend)
    console.print(f"time {name} against {fp32} on {target.name} (interleaved)")
    # two sessions taking turns on one machine: with spinning worker threads each session's pool keeps
    # spinning into the other's calls (ORT: mnasnet0_5 INT8/FP32 timed 0.53, 0.96, 0.87 in turns of 1, 5
    # and 20 calls, 0.93 alone); without spinning the turns give 0.90-0.94. The ratio is what is judged.
    quiet = target.model_copy(update={"spinning": False})
    try:
        from ..backends.inputs import resolve_shapes

        return time_against_fp32(lambda p: backend.compile(p, quiet, resolve_shapes(p, None, seq)[0] if seq else None),
                                 files[name], files[fp32],
                                 min(target.latency.runs, 100))
    except Exception as exc:  # noqa: BLE001 - the row's own measurement stands; say why no ratio
        row["warnings"].append(f"no interleaved INT8/FP32 timing ({type(exc).__name__}: {exc})")
        return None
