"""The distill stage end to end: every loss from a recipe, students of any CNN, feature-name checks,
unlabeled data, and two-process DDP matching one process."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from edgekd.artifacts.artifact import Artifact, stage_artifacts
from edgekd.stages.channels import rebuild_float
from edgekd.losses import LOSSES

from . import spawn
from .conftest import TINY_DATA, invoke, save_model, write_yaml
from .models import ResidualCNN

REPO = Path(__file__).resolve().parent.parent

# Each loss as a recipe term on the tiny zoo CNN (features.2 / features.6 are its two ReLU outputs).
LOSS_TERMS = {
    "kd": {}, "kd-labelfree": {}, "nkd": {}, "dhkd": {}, "taid": {}, "bdkd": {}, "pskd": {}, "nd": {},
    "multi-teacher": {"teachers": [{"checkpoint": "RESIDUAL", "arch": "tests.models:ResidualCNN"}],
                      "weighting": "confidence"},
    "layered-self": {"exits": ["features.2"]},
    "hint": {"pairs": [["features.6", "features.6"]]},
    "spatial-attention": {"pairs": [["features.2", "features.2"], ["features.6", "features.6"]]},
    "ofa": {"stages": ["features.2"]},
}


@pytest.fixture(scope="module")
def residual_teacher(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return save_model(ResidualCNN(num_classes=4), tmp_path_factory.mktemp("ckpt") / "residual.safetensors")


def distill_recipe(path: Path, loss: list[dict], *, epochs: int = 1, student: dict | None = None,
                   arch: str = "edgekd:tiny_cnn", data: dict | None = None, lr: float = 0.01,
                   teacher_check: bool = True) -> Path:
    return write_yaml(path, {"name": "d", "arch": arch, "data": data or TINY_DATA, "teacher_check": teacher_check,
                             "student": student or {"width": 0.5},
                             "stages": [{"stage": "distill", "epochs": epochs, "lr": lr, "loss": loss},
                                        {"stage": "export"}], "targets": []})


def onnx_linear_layers(path: Path) -> int:
    return sum(n.op_type in ("Gemm", "MatMul") for n in onnx.load(str(path)).graph.node)


# transformer losses need attention blocks: their compress runs (BERT students) are in tests/test_text.py
TEXT_LOSSES = {"minilm", "minilm-v2", "tinybert-hidden", "embedding-cosine"}
# detector losses: value, gradient and zero-for-identical in tests/test_detection_losses.py; their compress
# runs come with compress on a detector (issue 27, not built yet): this set names the gap, and shrinks then
DETECTION_LOSSES = {"detection-score-kd", "detection-box-kd", "fgd"}


def test_every_registered_loss_has_an_end_to_end_case():
    assert sorted([*LOSS_TERMS, *TEXT_LOSSES, *DETECTION_LOSSES]) == sorted(LOSSES.names())


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n not in TEXT_LOSSES | DETECTION_LOSSES])
def test_each_loss_trains_and_exports_without_its_auxiliary_parts(name, tiny_teacher, residual_teacher, tmp_path):
    params = json.loads(json.dumps(LOSS_TERMS[name]).replace("RESIDUAL", str(residual_teacher)))
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": name, **params}])
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    model = tmp_path / "run" / "models" / "student-fp32.onnx"
    # the student has one linear layer; adapters, auxiliary heads, exits and branches must not be exported
    assert onnx_linear_layers(model) == 1
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.random.rand(1, 1, 16, 16).astype(np.float32)})[0]
    assert out.shape == (1, 4) and np.isfinite(out).all()
    record = json.loads((tmp_path / "run" / "stages" / "00-distill" / "stage.json").read_text())
    metrics = record["artifacts"][0]["meta"]["metrics"]
    assert metrics["teacher_outputs"] == ("none" if name in ("pskd", "layered-self") else "cached")


def test_a_wrong_feature_name_fails_before_training_with_the_nearest_names(tiny_teacher, tmp_path):
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": "kd"}, {"name": "hint", "pairs": [["featres.6", "features.6"]]}])
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "stages.0.loss.1.pairs.0.0: the student has no module 'featres.6'; nearest valid names: features.6" \
        in " ".join(result.output.split())
    assert not (tmp_path / "run" / "stages").exists()  # checked before the first stage started


def test_width_student_of_a_residual_cnn_via_torch_pruning_reloads_from_its_artifact(residual_teacher, tmp_path):
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": "kd"}], arch="tests.models:ResidualCNN",
                            teacher_check=False)  # an untrained teacher: this test is about the student's shape
    result = invoke("compress", residual_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    art = stage_artifacts(tmp_path / "run" / "stages" / "00-distill")[0]
    # the residual add couples stem, block.conv2 and down's input: all halved together
    assert art.meta["channels"]["stem.0"] == 8 and art.meta["channels"]["block.conv2"] == 8
    assert art.meta["channels"]["down.0"] == 12 and art.meta["channels"]["head"] == 4
    rebuilt = rebuild_float(art)
    x = torch.rand(1, 1, 16, 16)
    session = ort.InferenceSession(str(tmp_path / "run" / "models" / "student-fp32.onnx"),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(rebuilt(x).detach().numpy(), session.run(None, {"input": x.numpy()})[0], atol=1e-4)
    teacher_params = sum(v.numel() for v in load_file(str(residual_teacher)).values())
    assert art.meta["metrics"]["params"] < teacher_params / 2.5


def test_ofa_distils_a_cnn_teacher_into_a_vit_student(tiny_teacher, tmp_path):
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": "ofa", "stages": ["blocks.0"]}],
                            student={"arch": "tests.models:TinyViT"})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "models" / "student-fp32.onnx").is_file()


def _npz_with_unlabeled(path: Path) -> Path:
    g = np.random.default_rng(0)
    x = g.random((96, 1, 16, 16), dtype=np.float32)
    y = np.arange(96) % 4
    for k in range(4):
        x[y == k, :, k * 4:(k + 1) * 4, :] += 1.0
    np.savez(path, x=x, y=y, x_unlabeled=g.random((64, 1, 16, 16), dtype=np.float32))
    return path


def test_label_free_kd_trains_on_unlabeled_images_and_kd_refuses_them(tiny_teacher, tmp_path):
    data = {"source": "npz", "path": str(_npz_with_unlabeled(tmp_path / "d.npz")), "batch_size": 32}
    # the tiny teacher learned TINY_DATA's patches, not these stripes: its score here is beside the point
    ok = distill_recipe(tmp_path / "ok.yaml", [{"name": "kd-labelfree"}], data=data, teacher_check=False)
    result = invoke("compress", tiny_teacher, "--recipe", ok, "--out", tmp_path / "ok")
    assert result.exit_code == 0, result.output
    bad = distill_recipe(tmp_path / "bad.yaml", [{"name": "kd"}], data=data, teacher_check=False)
    result = invoke("compress", tiny_teacher, "--recipe", bad, "--out", tmp_path / "bad")
    assert result.exit_code == 2
    assert "has unlabeled samples (x_unlabeled), but kd needs labels; use kd-labelfree" in " ".join(result.output.split())


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_teacher, tmp_path):
    """``torchrun --nproc_per_node=2`` (gloo, 2 CPU processes) against the same recipe in one process."""
    recipe = distill_recipe(tmp_path / "r.yaml", [{"name": "kd"}], epochs=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    common = ["compress", str(tiny_teacher), "--recipe", str(recipe)]
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("edgekd-rank1-*"))
    single = spawn.run([sys.executable, "-m", "edgekd", *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = spawn.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "edgekd", *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    def student(run: str) -> tuple[dict, dict]:
        art = stage_artifacts(tmp_path / run / "stages" / "00-distill")[0]
        return art.meta["metrics"], load_file(str(Path(art.path) / "model.safetensors"))

    (m1, w1), (m2, w2) = student("one"), student("two")
    assert set(scratch.glob("edgekd-rank1-*")) == before  # rank 1's scratch run was removed
    assert abs(m1["test_accuracy_torch"] - m2["test_accuracy_torch"]) <= 0.05
    assert [h["epoch"] for h in m2["history"]] == [1, 2, 3]
    # rank 0 trained on its half of every global batch (the shard), the single process on all of it
    assert [h["samples"] for h in m2["history"]] == [h["samples"] // 2 for h in m1["history"]]
    # same global batch and gradients averaged over ranks: weights agree up to BatchNorm's per-shard
    # statistics (SyncBatchNorm is GPU-only) and float reduction order
    rels = {k: float((w1[k] - w2[k]).norm() / (w1[k].norm() + 1e-8)) for k in w1 if k.endswith("weight")}
    print("relative weight differences:", rels)
    assert max(rels.values()) < 0.25, rels


def test_quantized_distillation_takes_any_registered_loss(tiny_teacher, tmp_path):
    """QAT with the teacher attached reads the same loss terms, feature losses included."""
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "q", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5}, "targets": [],
        "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                   {"stage": "quantize", "mode": "qat", "epochs": 2, "patience": 1, "calibration_batches": 2,
                    "reduce_range": True,
                    "loss": [{"name": "bdkd"}, {"name": "spatial-attention", "pairs": [["features.6", "features.6"]]}]},
                   {"stage": "export"}]})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "stages" / "01-quantize" / "stage.json").read_text())
    assert len(record["artifacts"][0]["meta"]["metrics"]["history"]) >= 1
    assert (tmp_path / "run" / "models" / "student-int8.onnx").is_file()
