"""The training loop's promises: determinism, resume, early stopping, NaN guard, teacher-output cache."""

from __future__ import annotations

import json

import pytest
import torch

import edgekd.train.loop as training
from edgekd.config.schema import Augment, DataSpec, LossTerm, TrainSpec
from edgekd.data import augment_batch, build_splits
from edgekd.errors import StageError
from edgekd.losses import Batch, DistillTerm
from edgekd.train.objective import Objective, build_objective
from edgekd.train.teacher_outputs import TeacherOutputs, TeacherRun
from edgekd.models.zoo import TinyCNN
from edgekd.train.loop import LoopSettings

from .conftest import invoke
from .test_distill import distill_recipe

SPLITS = build_splits(DataSpec(source="synthetic", samples=96, classes=3, image_size=8, batch_size=16))


def train(epochs=3, seed=0, **kw):
    torch.manual_seed(seed)
    model = TinyCNN(num_classes=3)
    result = training.fit(model, SPLITS, Objective.cross_entropy(), TrainSpec(epochs=epochs, lr=0.01, weight_decay=0.0), LoopSettings(seed=seed, batch_size=16, **kw), label="unit")
    return model, result


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_is_deterministic_for_a_seed():
    a, _ = train()
    b, _ = train()
    c, _ = train(seed=1)
    assert same_weights(a, b) and not same_weights(a, c)


def test_a_killed_run_resumes_after_its_last_epoch_with_the_same_result(tmp_path, monkeypatch):
    reference, _ = train(epochs=4)
    state = tmp_path / "train_state.pt"
    calls = []
    real_accuracy = training.checked_accuracy

    def dies_in_epoch_3(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while validating epoch 3: epochs 1-2 are saved
        return real_accuracy(*a)

    monkeypatch.setattr(training, "checked_accuracy", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(epochs=4, state_path=state, state_key="k")
    monkeypatch.setattr(training, "checked_accuracy", real_accuracy)
    assert torch.load(state, weights_only=True)["epoch"] == 2
    resumed, result = train(epochs=4, state_path=state, state_key="k")
    assert result.resumed_from_epoch == 2 and [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert same_weights(resumed, reference)
    _, fresh = train(epochs=4, state_path=state, state_key="other config")  # a stale state is not reused
    assert fresh.resumed_from_epoch == 0


def test_early_stopping_ends_training_after_patience_epochs_without_improvement():
    torch.manual_seed(0)
    result = training.fit(TinyCNN(num_classes=3), SPLITS, Objective.cross_entropy(), TrainSpec(epochs=10, lr=1e-12, weight_decay=0.0, patience=2), LoopSettings(seed=0, batch_size=16), label="unit")
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


class _Exploding(DistillTerm):
    needs_teacher = False

    def forward(self, b: Batch) -> torch.Tensor:
        return b.logits.sum() * float("inf")


def test_a_non_finite_term_stops_training_at_that_step_naming_the_term():
    objective = Objective([("ce", 1.0, Objective.cross_entropy().terms[0]), ("boom", 0.5, _Exploding(None, "x"))])
    model = TinyCNN(num_classes=3)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(StageError, match=r"unit: loss term 'boom' became (inf|nan) at epoch 1 step 1"):
        training.fit(model, SPLITS, objective, TrainSpec(epochs=2, lr=0.1, weight_decay=0), LoopSettings(seed=0, batch_size=16), label="unit")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no step was taken


def test_nan_training_from_the_cli_exits_1_with_one_line(tiny_teacher, tmp_path):
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": "kd"}], lr=1e30)
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "loss term 'kd' became" in result.output and "Traceback" not in result.output


def train_inputs(idx) -> torch.Tensor:
    return torch.stack([SPLITS.train[int(i)][0] for i in idx])


def test_teacher_outputs_are_cached_without_augmentation_and_online_with_it(monkeypatch):
    teacher = TinyCNN(num_classes=3).eval()
    memo: dict = {}
    cached = TeacherOutputs.prepare([teacher], [], SPLITS, augmented=False, key="k", memo=memo)
    assert not cached.online and cached.storage == "memory" and "computed once" in cached.reason
    # a later stage (QAT) asking for the same teacher, taps and data gets the same cache, not a recompute
    assert TeacherOutputs.prepare([teacher], [], SPLITS, augmented=False, key="k", memo=memo) is cached
    assert TeacherOutputs.prepare([teacher], [], SPLITS, augmented=False, key="other", memo=memo) is not cached
    idx = torch.tensor([5, 1, 7])
    logits, _ = cached(idx, torch.zeros(3, 1, 8, 8))  # cache lookup by index: the inputs are not used
    with torch.no_grad():
        assert torch.allclose(logits[0], teacher(train_inputs(idx)), atol=1e-6)
    online = TeacherOutputs.prepare([teacher], [], SPLITS, augmented=True, key="k")
    assert online.online and "augmented" in online.reason
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(online(idx, x)[0][0], teacher(x))
    monkeypatch.setenv("EDGEKD_TEACHER_CACHE_MB", "0")
    big = TeacherOutputs.prepare([teacher], [], SPLITS, augmented=False, key="k")  # no run folder for a disk cache
    assert big.online and "EDGEKD_TEACHER_CACHE_MB" in big.reason


def test_teacher_outputs_past_the_memory_limit_go_to_fp16_memmaps_in_the_run(monkeypatch, tmp_path):
    """Issue 12.5: a large cache lives on disk (fp16, memory-mapped), is looked up by index like the
    in-memory one, and a second prepare (another stage, or --resume) reuses the files."""
    from edgekd.models.features import Tap

    teacher = TinyCNN(num_classes=3).eval()
    tap = Tap("features", "output")
    monkeypatch.setenv("EDGEKD_TEACHER_CACHE_MB", "0")
    disk = TeacherOutputs.prepare([teacher], [tap], SPLITS, augmented=False, key="k", cache_dir=tmp_path)
    assert disk.storage == "disk" and not disk.online and "memory-mapped fp16" in disk.reason
    files = sorted(p.name for p in next(tmp_path.iterdir()).iterdir())
    assert "done.json" in files and any(f.endswith(".f16") for f in files)
    idx = torch.tensor([9, 0, 4])
    logits, feats = disk(idx, torch.zeros(3, 1, 8, 8))
    with torch.no_grad():
        expected = teacher(train_inputs(idx))
    assert torch.allclose(logits[0], expected, atol=2e-2, rtol=1e-2)  # fp16 storage
    assert feats[tap.key].shape[0] == 3
    stamp = {p.name: p.stat().st_mtime_ns for p in next(tmp_path.iterdir()).iterdir()}
    again = TeacherOutputs.prepare([teacher], [tap], SPLITS, augmented=False, key="k", cache_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in next(tmp_path.iterdir()).iterdir()} == stamp  # reused, not rewritten
    assert torch.equal(again(idx, torch.zeros(3, 1, 8, 8))[0][0], logits[0])


def test_build_objective_picks_the_teacher_mode_from_augmentation():
    teacher = TinyCNN(num_classes=3).eval()
    terms = [LossTerm(name="kd")]
    _, plain = build_objective(terms, "loss", TinyCNN(num_classes=3, width=0.5), teacher, SPLITS,
                               TeacherRun("k", augmented=False))
    _, augmented = build_objective(terms, "loss", TinyCNN(num_classes=3, width=0.5), teacher, SPLITS,
                                   TeacherRun("k", augmented=True))
    assert not plain.online and augmented.online


def test_augmentation_is_seeded_and_changes_the_batch():
    x = torch.rand(8, 1, 8, 8)
    spec = Augment(shift=2, hflip=True)
    a = augment_batch(x, spec, torch.Generator().manual_seed(0))
    b = augment_batch(x, spec, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape


def test_compress_resume_continues_a_killed_distill_stage(tiny_teacher, tmp_path, monkeypatch):
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": "kd"}], epochs=3)
    assert invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "ref").exit_code == 0
    real_accuracy, calls = training.checked_accuracy, []

    def dies_in_epoch_2(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_accuracy(*a)

    monkeypatch.setattr(training, "checked_accuracy", dies_in_epoch_2)
    killed = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert killed.exit_code == 130 and "interrupted" in killed.output
    monkeypatch.setattr(training, "checked_accuracy", real_accuracy)
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run", "--resume")
    assert result.exit_code == 0, result.output
    assert "distill: resuming after epoch 1/3" in result.output

    def weights(run):
        from safetensors.torch import load_file

        from edgekd.artifacts.artifact import stage_artifacts
        return load_file(stage_artifacts(tmp_path / run / "stages" / "00-distill")[0].path + "/model.safetensors")

    ref, got = weights("ref"), weights("run")
    assert all(torch.equal(ref[k], got[k]) for k in ref)
