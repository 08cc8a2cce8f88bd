"""Adding a task (issue 24): a toy task registered from this file alone (top-2 accuracy) is accepted by
a recipe and scores every model of a compress run, in training and on each backend; and a custom
metric function (``metric: package.module:function``) scores a classification run without a task."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from edgekd.config.schema import DataSpec
from edgekd.data import build_splits
from edgekd.models.checkpoint import load_checkpoint
from edgekd.tasks import TASKS, Agreement, Task

from .conftest import TINY_DATA, invoke, save_model, trained_tiny_cnn, write_yaml


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A teacher trained part-way (3 epochs): above chance, but not perfect, so that top-2 and a balanced
    accuracy differ from its top-1 (on the fully trained one all three are 1.0)."""
    return save_model(trained_tiny_cnn(epochs=3), tmp_path_factory.mktemp("ckpt") / "part.safetensors")


def top2(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((np.argsort(outputs, axis=1)[:, -2:] == labels[:, None]).any(axis=1)))


@TASKS.register("toy-top2")
class TopTwo(Task):
    """Class logits scored by top-2 accuracy; two files agree when their top-2 sets are the same."""

    name: ClassVar[str] = "toy-top2"
    metric: ClassVar[str] = "top-2 accuracy"

    def score(self, outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
        return {"accuracy": top2(outputs, labels)}

    def agreement(self, reference: np.ndarray, output: np.ndarray) -> Agreement:
        same = np.sort(np.argsort(reference, 1)[:, -2:], 1) == np.sort(np.argsort(output, 1)[:, -2:], 1)
        return Agreement(float(np.mean(same.all(1))), "top-2 set agreement")


def teacher_outputs(checkpoint) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's torch outputs and labels on the test split, computed here, not by the run."""
    splits = build_splits(DataSpec(**TINY_DATA))
    model = load_checkpoint(checkpoint, "edgekd:tiny_cnn", num_classes=4, in_channels=1).model.eval()
    batches = list(splits.arrays("test"))
    with torch.no_grad():
        outputs = [model(torch.from_numpy(x)).numpy() for x, _ in batches]
    return np.concatenate(outputs), np.concatenate([y for _, y in batches])


def run(tmp_path, teacher, target, **top) -> tuple[Any, dict, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = write_yaml(tmp_path / "r.yaml", {"name": "t", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, **top,
                                              "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                                                         {"stage": "export"}], "targets": [str(target)]})
    result = invoke("compress", teacher, "--recipe", recipe, "--out", tmp_path / "run")
    if result.exit_code != 0:
        return result, {}, {}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    return result, {r["variant"]: r for r in report["results"]}, manifest


def test_a_task_registered_from_a_test_file_scores_a_compress_run(tiny_teacher, tiny_files, tmp_path):
    result, rows, manifest = run(tmp_path, tiny_teacher, tiny_files["ort"], task="toy-top2")
    assert result.exit_code == 0, result.output
    outputs, labels = teacher_outputs(tiny_teacher)
    assert rows["teacher-fp32"]["accuracy"] == top2(outputs, labels) != float(np.mean(outputs.argmax(1) == labels))
    assert manifest["task"] == {"name": "toy-top2", "metric": "top-2 accuracy"}
    # the student's file on ORT and its torch model as the distill stage scored it: both by top-2
    torch_score = manifest["models"]["student-fp32"]["meta"]["accuracy_torch"]
    assert abs(rows["student-fp32"]["accuracy"] - torch_score) <= 1 / rows["student-fp32"]["eval_samples"]


def test_a_custom_metric_function_scores_a_classification_run(tiny_teacher, tiny_files, tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "import numpy as np\n"
        "def balanced(outputs, labels):\n"
        "    hits = outputs.argmax(1) == labels\n"
        "    return float(np.mean([hits[labels == c].mean() for c in np.unique(labels)]))\n"
        "def broken(outputs, labels):\n"
        "    return 7.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result, rows, manifest = run(tmp_path, tiny_teacher, tiny_files["ort"], metric="my_metrics:balanced")
    assert result.exit_code == 0, result.output
    outputs, labels = teacher_outputs(tiny_teacher)
    hits = outputs.argmax(1) == labels
    balanced = float(np.mean([hits[labels == c].mean() for c in np.unique(labels)]))
    assert rows["teacher-fp32"]["accuracy"] == balanced != float(hits.mean())
    assert manifest["task"] == {"name": "classification", "metric": "my_metrics:balanced"}
    assert "Accuracy: my_metrics:balanced of the exported ONNX file" in (tmp_path / "run" / "report.md").read_text()
    bad = run(tmp_path / "b", tiny_teacher, tiny_files["ort"], metric="my_metrics:broken")[0]
    assert bad.exit_code == 2 and "metric my_metrics:broken: gave 7.0; a metric returns a number in [0, 1]" in bad.output
    missing = run(tmp_path / "c", tiny_teacher, tiny_files["ort"], metric="my_metrics:nothing")[0]
    assert missing.exit_code == 2 and "metric 'my_metrics:nothing': cannot import my_metrics.nothing" in missing.output
    elsewhere = run(tmp_path / "d", tiny_teacher, tiny_files["ort"], task="embedding", metric="my_metrics:balanced")[0]
    assert elsewhere.exit_code == 2 and "a custom metric function is for classification" in elsewhere.output


def test_an_embedding_cnn_keeps_the_teachers_width_through_pruning_and_a_width_student(tmp_path, tiny_files):
    """The task says which width a student keeps: an embedding CNN (16-wide outputs on 4-class data) is
    pruned and narrowed everywhere but the layer that makes its embedding, and every model is scored by
    cosine to the teacher's embeddings (a class-count rule pruned that layer to 8 and the run failed)."""
    import onnx
    from safetensors.torch import save_file

    from edgekd.models.zoo import TinyCNN

    torch.manual_seed(0)
    teacher = TinyCNN(num_classes=16)
    checkpoint = tmp_path / "embedder.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(checkpoint))
    recipe = write_yaml(tmp_path / "e.yaml", {
        "name": "e", "arch": "edgekd:tiny_cnn", "arch_args": {"num_classes": 16}, "task": "embedding",
        "data": TINY_DATA, "student": {"width": 0.5},
        "stages": [{"stage": "prune", "ratio": 0.25, "recovery": {"epochs": 1, "loss": [{"name": "embedding-cosine"}]}},
                   {"stage": "distill", "epochs": 1, "lr": 0.01}, {"stage": "export"}],
        "targets": [str(tiny_files["ort"])]})
    result = invoke("compress", checkpoint, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    width = onnx.load(str(run / "models" / "student-fp32.onnx")).graph.output[0].type.tensor_type.shape.dim[1].dim_value
    assert width == 16
    rows = {r["variant"]: r for r in json.loads((run / "report.json").read_text())["results"]}
    assert rows["teacher-fp32"]["accuracy"] > 0.999 and 0.0 < rows["student-fp32"]["accuracy"] < 1.0
    assert "spearman" in json.dumps(json.loads((run / "measurements" / "student-fp32@tiny-ort.json").read_text()))
