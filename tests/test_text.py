"""Hugging Face text encoders (issue 16): hf:DIR checkpoints, text data, layer-dropped students, the
transformer losses, and compress end to end for both tasks on ONNX Runtime and OpenVINO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import FAST_LATENCY, invoke, write_yaml
from .text_models import bert_folder, reviews

transformers = pytest.importorskip("transformers", reason="the text extra (pip install 'edgekd[text]') is not installed")

from edgekd.config.schema import DataSpec  # noqa: E402
from edgekd.errors import CheckpointError, DataError  # noqa: E402
from edgekd.losses import LOSSES, Batch, SetupInfo  # noqa: E402
from edgekd.models.text import drop_layers, load_hf  # noqa: E402


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("hf") / "bert")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return reviews(tmp_path_factory.mktemp("text") / "reviews.jsonl")


def packed(n: int = 4, seq: int = 10, vocab: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[0, 6:] = 0  # one padded sample
    return torch.stack([ids, mask, torch.zeros_like(ids)], 1)


# ---------------------------------------------------------------- checkpoints and students
def test_an_hf_folder_loads_offline_for_both_tasks(bert):
    classifier = load_hf(bert, "classification", num_labels=3)
    assert classifier(packed()).shape == (4, 3)
    encoder = load_hf(bert, "embedding")
    emb = encoder(packed())
    assert emb.shape == (4, 32)
    # mean pooling leaves padding out: the padded sample's embedding is that of its first 6 tokens
    x = packed()
    alone = encoder(x[:1, :, :6])
    assert torch.allclose(emb[:1], alone, atol=1e-5)


def test_pickled_weights_need_trust(bert, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((bert / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(CheckpointError, match="pickled weights can run code when loaded"):
        load_hf(folder, "classification")


def test_dropping_layers_keeps_the_teachers_weights_on_every_other_layer(bert):
    teacher = load_hf(bert, "classification")
    student = drop_layers(teacher)
    layers_t, layers_s = teacher.backbone.bert.encoder.layer, student.backbone.bert.encoder.layer
    assert len(layers_s) == 2 and student.config.num_hidden_layers == 2 and len(layers_t) == 4
    assert torch.equal(layers_s[1].attention.self.query.weight, layers_t[2].attention.self.query.weight)
    assert layers_s[1].attention.self.query.weight.data_ptr() != layers_t[2].attention.self.query.weight.data_ptr()
    assert student(packed()).shape == (4, 2)


# ---------------------------------------------------------------- text data
def test_text_data_is_tokenized_to_max_length_with_string_labels_mapped(bert, tmp_path):
    from edgekd.data.build import build_splits

    path = tmp_path / "mood.csv"
    path.write_text("sentence,mood\n" + "the film was good,pos\nawful food,neg\n" * 20, encoding="utf-8")
    splits = build_splits(DataSpec(source="text", path=str(path), text_column="sentence", label_column="mood",
                                   tokenizer=str(bert), max_length=12))
    x, y, _ = splits.train[0]
    assert x.dtype == torch.int64 and x.shape == (3, 12)
    assert splits.num_classes == 2 and splits.class_names == ["neg", "pos"]
    assert int(x[1].sum()) < 12 and int(x[1, 0]) == 1  # a mask: ones for the tokens, zeros for the padding


def test_text_data_errors_name_the_column(bert, tmp_path):
    from edgekd.data.build import build_splits

    path = tmp_path / "x.jsonl"
    path.write_text('{"body": "hello"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no column 'text'; columns: body"):
        build_splits(DataSpec(source="text", path=str(path), tokenizer=str(bert)))


# ---------------------------------------------------------------- losses
def _qkv_info(student, teacher, x, taps_s, taps_t):
    from edgekd.models.features import capture

    fs, ft = {}, {}
    with capture(student, taps_s, fs):
        logits = student(x)
    with torch.no_grad(), capture(teacher, taps_t, ft):
        t_logits = teacher(x)
    return logits, t_logits, fs, ft


@pytest.mark.parametrize("name, params", [
    ("minilm", {}),
    ("minilm-v2", {"relation_heads": 8}),
])
def test_minilm_losses_are_zero_for_the_teacher_itself_and_train_a_student(bert, name, params):
    teacher = load_hf(bert, "embedding").eval()
    student = drop_layers(teacher).train()
    block_t, block_s = "backbone.encoder.layer.3.attention.self", "backbone.encoder.layer.1.attention.self"
    cls = LOSSES.get(name)
    loss = cls(cls.Params(student=block_s, teacher=block_t, **params), f"test.{name}")
    loss.bind(student, teacher)
    x = packed()
    logits, t_logits, fs, ft = _qkv_info(student, teacher, x, loss.student_taps(), loss.teacher_taps())
    loss.setup(SetupInfo(num_classes=1, n_train=4, student=student, teacher=teacher, student_features=fs,
                         teacher_features=ft, train_labels=None))
    value = loss(Batch(logits=logits, labels=None, index=torch.arange(4), teacher_logits=[t_logits],
                       student_features=fs, teacher_features=ft, attention_mask=x[:, 1]))
    assert value.item() > 1e-4
    value.backward()
    assert student.backbone.encoder.layer[1].attention.self.query.weight.grad.abs().sum() > 0
    # the teacher against itself: nothing to transfer
    self_loss = cls(cls.Params(student=block_t, teacher=block_t, **params), f"test.{name}")
    self_loss.bind(teacher, teacher)
    _, _, f1, f2 = _qkv_info(teacher, teacher, x, self_loss.student_taps(), self_loss.teacher_taps())
    zero = self_loss(Batch(logits=t_logits, labels=None, index=torch.arange(4), teacher_logits=[t_logits],
                           student_features=f1, teacher_features=f2, attention_mask=x[:, 1]))
    assert abs(zero.item()) < 1e-6


def test_minilm_v2_needs_no_matching_heads_but_minilm_does(tmp_path):
    from edgekd.errors import RecipeError

    teacher = load_hf(bert_folder(tmp_path / "t", heads=4), "embedding")
    student = load_hf(bert_folder(tmp_path / "s", layers=2, heads=2), "embedding")
    blocks = {"student": "backbone.encoder.layer.1.attention.self", "teacher": "backbone.encoder.layer.3.attention.self"}
    x = packed()
    v1 = LOSSES.get("minilm")(LOSSES.get("minilm").Params(**blocks), "test.minilm")
    v1.bind(student, teacher)
    _, _, fs, ft = _qkv_info(student, teacher, x, v1.student_taps(), v1.teacher_taps())
    info = SetupInfo(num_classes=1, n_train=4, student=student, teacher=teacher, student_features=fs,
                     teacher_features=ft, train_labels=None)
    with pytest.raises(RecipeError, match="needs equal head counts \\(student 2, teacher 4\\); use minilm-v2"):
        v1.setup(info)
    v2 = LOSSES.get("minilm-v2")(LOSSES.get("minilm-v2").Params(relation_heads=4, **blocks), "test.minilm-v2")
    v2.bind(student, teacher)
    v2.setup(info)
    assert v2(Batch(logits=torch.zeros(4, 32), labels=None, index=torch.arange(4), teacher_logits=[],
                    student_features=fs, teacher_features=ft)).item() > 0


def test_tinybert_hidden_projects_and_ignores_padding():
    cls = LOSSES.get("tinybert-hidden")
    loss = cls(cls.Params(pairs=[("s", "t")]), "test.tinybert")
    fs, ft = {"s": torch.randn(2, 5, 8)}, {"t": torch.randn(2, 5, 16)}
    loss.setup(SetupInfo(num_classes=1, n_train=2, student=torch.nn.Identity(), teacher=None, student_features=fs,
                         teacher_features=ft, train_labels=None))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[:, 3:] = 0
    b = Batch(logits=torch.zeros(2, 1), labels=None, index=torch.arange(2), teacher_logits=[], student_features=fs,
              teacher_features=ft, attention_mask=mask)
    before = loss(b).item()
    ft["t"][:, 3:] += 100.0  # padding positions: no effect
    assert abs(loss(b).item() - before) < 1e-5
    ft["t"][:, 0] += 100.0
    assert loss(b).item() > before + 1.0


def test_embedding_cosine_is_zero_for_the_same_direction():
    cls = LOSSES.get("embedding-cosine")
    loss = cls(cls.Params(), "test.cos")
    e = torch.randn(3, 8)
    assert loss(Batch(logits=2 * e, labels=None, index=torch.arange(3), teacher_logits=[e])).item() < 1e-6
    assert loss(Batch(logits=-e, labels=None, index=torch.arange(3), teacher_logits=[e])).item() == pytest.approx(2.0)


def test_list_losses_describes_the_text_losses():
    result = invoke("list", "losses")
    assert result.exit_code == 0
    for name in ("minilm", "minilm-v2", "tinybert-hidden", "embedding-cosine"):
        assert name in result.output


# ---------------------------------------------------------------- compress end to end
def _text_recipe(tmp_path: Path, bert: Path, corpus: Path, task: str, loss: list[dict], quantize: dict) -> Path:
    ort = write_yaml(tmp_path / "ort.yaml", {"name": "text-ort", "backend": "onnxruntime", "threads": 1,
                                             "latency": FAST_LATENCY})
    ov = write_yaml(tmp_path / "ov.yaml", {"name": "text-ov", "backend": "openvino", "threads": 1,
                                           "precision_hint": "f32", "latency": FAST_LATENCY})
    recipe = {"name": f"text-{task}", "arch": f"hf:{bert}", "task": task,
              "teacher_check": False,  # a random-weight BERT: what is tested is the text path, not the teacher
              "data": {"source": "text", "path": str(corpus), "max_length": 16, "batch_size": 32,
                       **({} if task == "classification" else {"label_column": "none"})},
              "student": {"layers": "alternate"},
              "stages": [{"stage": "distill", "epochs": 3, "lr": 0.002, "loss": loss},
                         {"stage": "quantize", **quantize}, {"stage": "export"}],
              "targets": [str(ort), str(ov)]}
    return write_yaml(tmp_path / "recipe.yaml", recipe)


def _rows(run: Path) -> dict[tuple[str, str], dict]:
    report = json.loads((run / "report.json").read_text())
    return {(r["variant"], r["target"]): r for r in report["results"]}


@pytest.mark.floor
def test_compress_a_text_classifier_minilm_qat_export_on_both_runtimes(bert, corpus, tmp_path):
    blocks = {"student": "backbone.bert.encoder.layer.1.attention.self",
              "teacher": "backbone.bert.encoder.layer.3.attention.self"}
    recipe = _text_recipe(tmp_path, bert, corpus, "classification",
                          # mostly the labels (alpha 0.2): a random-weight teacher gives near-tied logits, and a
                          # student that only copied them would have no decisive samples to compare files on
                          [{"name": "kd", "weight": 1.0, "alpha": 0.2}, {"name": "minilm", "weight": 1.0, **blocks},
                           {"name": "tinybert-hidden", "weight": 0.1,
                            "pairs": [["backbone.bert.encoder.layer.1", "backbone.bert.encoder.layer.3"]]}],
                          {"mode": "qat", "epochs": 1, "calibration_batches": 2, "lr": 0.0005})
    run = tmp_path / "run"
    result = invoke("compress", "--recipe", recipe, "--out", run)
    assert result.exit_code == 0, result.output
    rows = _rows(run)
    for target in ("text-ort", "text-ov"):
        int8 = rows[("student-int8", target)]
        assert int8["status"] == "ok" and int8["precision"] == "int8"
        assert int8["int8_layers"]["int8"] >= 0.7 * int8["int8_layers"]["total"]  # every Linear; attention matmuls float
        assert int8["input_shapes"]["input_ids"] == [1, 16]  # timed at the recipe's sequence length
        assert 0.0 <= int8["accuracy"] <= 1.0 and int8["eval_samples"] == 48
    # ONNX Runtime runs the dynamic layout (every Linear an integer MatMul), OpenVINO the QDQ file
    assert rows[("student-int8", "text-ort")]["onnx"].endswith("student-int8.dynamic.onnx")
    assert rows[("student-int8", "text-ov")]["onnx"].endswith("student-int8.onnx")
    from edgekd.artifacts.onnx_files import read_metadata

    meta = read_metadata(run / "models" / "student-int8.onnx")  # what a deployed file says of its inputs
    assert meta["input_shape"] == {name: [1, 16] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert meta["preprocess"]["tokenizer"] == bert.name  # the folder's name, never the build machine's path
    ops = rows[("student-int8", "text-ort")]["int8_layers"]["ops"]
    integer = ("DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat")
    assert sum(ops.get(k, 0) for k in integer) == 14  # 12 in the layers, pooler, head; attention matmuls float
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["models"]["student-int8"]["meta"]["parity"]["dynamic"]["top1_agreement"] >= 0.9
    import onnx

    graph = onnx.load(str(run / "models" / "student-int8.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_param == "sequence"  # dynamic axes kept
    # report and gate read a text run as any other
    budget = write_yaml(tmp_path / "budget.yaml", {"max_size_mb": 5, "variant": "student-int8"})
    assert invoke("gate", run, "--budget", budget).exit_code == 0


def test_compress_a_sentence_encoder_without_labels_minilm_v2_qat(bert, tmp_path):
    corpus = reviews(tmp_path / "unlabelled.jsonl", labels=False)
    blocks = {"student": "backbone.encoder.layer.1.attention.self", "teacher": "backbone.encoder.layer.3.attention.self"}
    recipe = _text_recipe(tmp_path, bert, corpus, "embedding",
                          [{"name": "embedding-cosine", "weight": 1.0},
                           {"name": "minilm-v2", "weight": 1.0, "relation_heads": 4, **blocks}],
                          {"mode": "qat", "epochs": 1, "calibration_batches": 2, "lr": 0.0005,
                           "loss": [{"name": "embedding-cosine"}]})
    run = tmp_path / "run"
    result = invoke("compress", "--recipe", recipe, "--out", run)
    assert result.exit_code == 0, result.output
    rows = _rows(run)
    for target in ("text-ort", "text-ov"):
        teacher, int8 = rows[("teacher-fp32", target)], rows[("student-int8", target)]
        assert teacher["embedding"]["cosine_to_teacher"] == pytest.approx(1.0, abs=1e-5)
        assert int8["accuracy"] == int8["embedding"]["cosine_to_teacher"] and int8["accuracy"] > 0.5
        assert -1.0 <= int8["embedding"]["spearman"] <= 1.0 and int8["embedding"]["pairs"] == 48 * 47 // 2
        assert int8["int8_layers"]["int8"] > 0
    out = np.load(run / "stages" / "03-export" / "student-int8.reference.npy") if (
        run / "stages" / "03-export").is_dir() else None
    assert out is None or out.shape[1] == 32  # the file outputs embeddings, not class logits


def test_a_loss_naming_a_layer_the_student_dropped_fails_before_training(bert, corpus, tmp_path):
    blocks = {"student": "backbone.bert.encoder.layer.3.attention.self",  # the 2-layer student has 0 and 1
              "teacher": "backbone.bert.encoder.layer.3.attention.self"}
    recipe = _text_recipe(tmp_path, bert, corpus, "classification", [{"name": "minilm", **blocks}],
                          {"mode": "ptq", "calibration_batches": 1})
    result = invoke("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "stages.0.loss.0.student: the student has no module 'backbone.bert.encoder.layer.3.attention.self'" \
        in result.output
    assert not (tmp_path / "run" / "stages").exists() or not any((tmp_path / "run" / "stages").iterdir())


def test_a_save_to_disk_folder_keeps_its_splits(bert, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the data extra is not installed")
    from edgekd.data.build import build_splits

    rows = {"text": ["good day", "bad film", "nice room", "awful food"] * 10, "label": [1, 0, 1, 0] * 10}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({k: v[:8] for k, v in rows.items()})}
                         ).save_to_disk(str(tmp_path / "saved"))
    splits = build_splits(DataSpec(source="text", path=str(tmp_path / "saved"), tokenizer=str(bert), max_length=8))
    assert splits.size("test") == 8 and splits.provenance["splits"]["test"] == "given"
    assert splits.size("train") + splits.size("val") == 40


def test_a_narrower_text_student_keeps_its_heads_and_rebuilds_from_its_artifact(bert, corpus, tmp_path):
    """student.width on a BERT: Torch-Pruning removes the same dims from every head of query/key/value
    (and the hidden size with them); the saved student rebuilds from the folder's config and its plan."""
    from edgekd.artifacts.artifact import Artifact
    from edgekd.stages.channels import rebuild_float
    from edgekd.models.text import load_hf as load

    blocks = {"student": "backbone.bert.encoder.layer.3.attention.self",
              "teacher": "backbone.bert.encoder.layer.3.attention.self"}
    recipe = _text_recipe(tmp_path, bert, corpus, "classification", [{"name": "kd"}, {"name": "minilm", **blocks}],
                          {"mode": "ptq", "calibration_batches": 1})
    write_yaml(recipe, {**yaml.safe_load(recipe.read_text()), "student": {"width": 0.5}})
    run = tmp_path / "run"
    result = invoke("compress", "--recipe", recipe, "--out", run)
    assert result.exit_code == 0, result.output
    record = json.loads((run / "stages" / "00-distill" / "stage.json").read_text())["artifacts"][0]
    record["path"] = str(run / record["path"].removeprefix("run:"))
    student = rebuild_float(Artifact.from_json(record))
    attention = student.backbone.bert.encoder.layer[0].attention.self
    assert attention.query.out_features == 16 and attention.num_attention_heads == 4
    assert attention.attention_head_size == 4 and student.config.hidden_size == 16
    x = packed()
    teacher = load(bert, "classification")
    assert student(x).shape == teacher(x).shape == (4, 2)


def test_a_tokenizer_that_does_not_know_the_text_is_refused(tmp_path):
    from edgekd.data.build import build_splits

    from .text_models import wordpiece

    folder = tmp_path / "tok"
    folder.mkdir()
    wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"], folder).save_pretrained(folder)
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "the quick brown fox", "label": 0}\n' * 30, encoding="utf-8")
    with pytest.raises(DataError, match="75% of the text's tokens are unknown to it \\(vocabulary of 6\\)"):
        build_splits(DataSpec(source="text", path=str(path), tokenizer=str(folder)))


def test_any_hf_architecture_can_be_the_student(bert, corpus, tmp_path):
    """student.arch: hf:OTHER_DIR builds that folder's architecture (its config, fresh weights)."""
    small = bert_folder(tmp_path / "small", layers=1, heads=2, hidden=16)
    recipe = _text_recipe(tmp_path, bert, corpus, "classification", [{"name": "kd"}],
                          {"mode": "ptq", "calibration_batches": 1})
    write_yaml(recipe, {**yaml.safe_load(recipe.read_text()), "student": {"arch": f"hf:{small}"}})
    run = tmp_path / "run"
    result = invoke("compress", "--recipe", recipe, "--out", run)
    assert result.exit_code == 0, result.output
    sizes = {v["name"]: v["size_bytes"] for v in json.loads((run / "report.json").read_text())["variants"]}
    assert sizes["student-fp32"] < sizes["teacher-fp32"] / 2


def test_an_embedding_run_refuses_a_logit_loss(bert, tmp_path):
    """The embedding task names the losses that fit its outputs: an explicit kd fails before training."""
    corpus = reviews(tmp_path / "unlabelled.jsonl", labels=False)
    recipe = _text_recipe(tmp_path, bert, corpus, "embedding", [{"name": "embedding-cosine"}],
                          {"mode": "qat", "epochs": 1, "calibration_batches": 1, "loss": [{"name": "kd"}]})
    result = invoke("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "stages.1.loss.0: 'kd' does not fit a embedding run's outputs; it trains with embedding-cosine" \
        in result.output.replace("\n", "")


def test_a_training_stage_without_a_loss_gets_the_tasks_default(bert, tmp_path):
    """QAT names no loss: an embedding run distills with the embedding task's default, a classification
    run with kd, and a loss the recipe gives is kept."""
    from edgekd.run.recipe import load_recipe
    from edgekd.run.targets import settle_targets

    corpus = reviews(tmp_path / "unlabelled.jsonl", labels=False)
    for task, default in (("embedding", "embedding-cosine"), ("classification", "kd")):
        recipe = _text_recipe(tmp_path, bert, corpus, task, [{"name": "embedding-cosine"}],
                              {"mode": "qat", "epochs": 1})
        settled, _ = settle_targets(load_recipe(recipe))
        assert [t.name for t in settled.stages[0].loss] == ["embedding-cosine"]
        assert [t.name for t in settled.stages[1].loss] == [default]


def test_an_embedding_dry_run_checks_losses_first_and_never_runs_the_teacher_over_a_split(bert, tmp_path,
                                                                                          monkeypatch):
    """Issue 25's fast text dry run: a loss that does not fit the task fails before the teacher runs over
    any split; a dry run runs it over none (its references wait until something is scored); a real run
    runs it over the test split once (its references and its own score share that pass)."""
    import edgekd.run.pipeline as pipeline

    calls = []
    real = pipeline.predict_logits
    monkeypatch.setattr(pipeline, "predict_logits", lambda model, splits, split, *a, **k: calls.append(split)
                        or real(model, splits, split, *a, **k))
    corpus = reviews(tmp_path / "unlabelled.jsonl", labels=False)
    bad = _text_recipe(tmp_path, bert, corpus, "embedding", [{"name": "kd"}], {"mode": "ptq", "calibration_batches": 1})
    result = invoke("compress", "--recipe", bad, "--out", tmp_path / "a", "--dry-run")
    assert result.exit_code == 2 and "'kd' does not fit" in result.output and calls == []
    good = _text_recipe(tmp_path, bert, corpus, "embedding", [{"name": "embedding-cosine"}],
                        {"mode": "ptq", "calibration_batches": 1})
    result = invoke("compress", "--recipe", good, "--out", tmp_path / "b", "--dry-run")
    assert result.exit_code == 0, result.output
    assert calls == []
    untimed = write_yaml(tmp_path / "untimed.yaml", {**yaml.safe_load(good.read_text()), "targets": []})
    result = invoke("compress", "--recipe", untimed, "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    assert calls.count("test") == 1


def planted_teacher(root: Path, inert: tuple[int, ...]) -> Path:
    """A 4-layer BERT encoder folder whose ``inert`` layers compute nothing: their attention and feed-forward
    outputs are zero, so each returns its (already normalised) input; the others' feed-forward outputs are
    made 10x larger, so each changes the embedding clearly. A student of the working layers is then the
    teacher itself; any other subset of as many layers loses one that works."""
    from safetensors.torch import load_file, save_file

    folder = bert_folder(root)
    weights = load_file(str(folder / "model.safetensors"))
    for i in range(4):
        for part in ("attention.output.dense", "output.dense"):
            for kind in ("weight", "bias"):
                key = f"bert.encoder.layer.{i}.{part}.{kind}"
                weights[key] = torch.zeros_like(weights[key]) if i in inert else weights[key] * 10
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_measured_layers_keep_the_subset_that_scores_best_untrained(tmp_path):
    """``student: {layers: measured, depth: 2}`` on a teacher whose layers 0 and 2 are planted inert: of
    the six 2-layer subsets, [1, 3] is the teacher's own function (cosine 1 before training) and is kept;
    every subset's score is in the run, and the rule-based starts (``alternate``: [0, 2]) score lower."""
    folder = planted_teacher(tmp_path / "planted", inert=(0, 2))
    corpus = reviews(tmp_path / "unlabelled.jsonl", labels=False)
    recipe = write_yaml(tmp_path / "recipe.yaml", {
        "name": "measured", "arch": f"hf:{folder}", "task": "embedding",
        "data": {"source": "text", "path": str(corpus), "max_length": 16, "batch_size": 32, "label_column": "none"},
        "student": {"layers": "measured", "depth": 2},
        "stages": [{"stage": "distill", "epochs": 1, "lr": 1e-5}, {"stage": "export"}], "targets": []})
    run = tmp_path / "run"
    result = invoke("compress", "--recipe", recipe, "--out", run)
    assert result.exit_code == 0, result.output
    (meta,) = [a["meta"] for a in json.loads((run / "stages" / "00-distill" / "stage.json").read_text())["artifacts"]]
    scores = meta["derived"]["layer_scores"]
    assert len(scores) == 6 and meta["derived"]["layers"] == [1, 3]
    assert scores["1,3"] == max(scores.values()) and scores["1,3"] > 0.999
    assert scores["0,2"] < scores["1,3"] - 0.01
    assert "kept [1,3]" in result.output
    assert meta["arch_kwargs"]["arch_args"]["layers"] == [1, 3]  # what rebuilding the student keeps


def test_depth_without_measured_layers_is_refused():
    from pydantic import ValidationError

    from edgekd.config.schema import StudentSpec

    with pytest.raises(ValidationError, match="'depth' goes with 'layers: measured'"):
        StudentSpec.model_validate({"layers": "alternate", "depth": 2})
    assert StudentSpec.model_validate({"layers": "measured"}).depth is None


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(1, 24), data=st.data())
def test_layer_candidates_are_distinct_subsets_of_the_asked_size(depth, data):
    """Any depth and size: all subsets when they are few, else the rule-based starts and a sample, up to the cap."""
    import math

    from edgekd.stages.distill.layer_choice import MAX_CANDIDATES, candidate_layers

    keep = data.draw(st.integers(1, depth))
    found = candidate_layers(depth, keep)
    assert len(found) == min(math.comb(depth, keep), MAX_CANDIDATES) == len(set(found))
    assert all(len(c) == keep and list(c) == sorted(set(c)) and 0 <= c[0] and c[-1] < depth for c in found)
    if keep <= (depth + 1) // 2:
        assert tuple(range(0, depth, 2))[:keep] in found  # the DistilBERT start is always among them


def test_text_models_get_fine_tuning_defaults_and_keep_what_the_recipe_sets(tmp_path):
    """An ``hf:`` teacher's unset learning rates come down to 1e-4 (the CNN default 3e-3 is a retraining
    rate) and unset decays become 0.01, nested schedules (prune's recovery) included; set keys and
    image recipes are left alone."""
    from edgekd.run.recipe import assemble_recipe

    stages = [{"stage": "prune", "ratio": 0.2, "recovery": {"epochs": 1}},
              {"stage": "distill", "epochs": 1}, {"stage": "quantize", "mode": "qat", "lr": 5e-5}, {"stage": "export"}]
    path = write_yaml(tmp_path / "r.yaml", {"name": "t", "stages": stages, "targets": []})
    text = assemble_recipe(path, None, arch="hf:/anywhere", arch_args=None, device=None, targets=None)
    prune, distill, quantize = text.stages[:3]
    assert (distill.lr, distill.weight_decay) == (1e-4, 0.01)
    assert (prune.recovery.lr, prune.recovery.weight_decay) == (1e-4, 0.01)
    assert (quantize.lr, quantize.weight_decay) == (5e-5, 0.01)  # the recipe's own lr kept
    image = assemble_recipe(path, None, arch=None, arch_args=None, device=None, targets=None)
    assert (image.stages[1].lr, image.stages[1].weight_decay) == (3e-3, 5e-4)
    assert image.stages[0].recovery.lr == 1e-3


def test_data_text_file_on_the_command_line(bert, tmp_path):
    """``--data text:FILE``, as the other sources have a form: the recipe's other data keys kept (the
    command line taking it to the model folder: tests/test_trust.py's compress runs)."""
    from edgekd.data.spec import parse_data_spec

    corpus = reviews(tmp_path / "r.jsonl", labels=False)
    data = parse_data_spec(f"text:{corpus}", {"source": "digits", "image_size": 32, "max_length": 16})
    assert (data["source"], data["path"], data["max_length"]) == ("text", str(corpus), 16)
    assert "image_size" not in data  # the generated digits' size went with them


def test_a_streamed_corpus_gives_the_same_samples_as_the_in_memory_one_and_trains(bert, tmp_path):
    """``data.stream``: every sample of every split is the tensor the in-memory reader makes of the same
    line, while the source keeps line offsets only; a labelled file is refused; a run trains on it."""
    from edgekd.data.build import build_splits
    from edgekd.data.text import StreamedTexts

    corpus = reviews(tmp_path / "unlabelled.jsonl", labels=False)
    keys = {"source": "text", "path": str(corpus), "tokenizer": str(bert), "max_length": 12, "label_column": "none"}
    held, streamed = (build_splits(DataSpec(**keys, stream=stream)) for stream in (False, True))
    for split in ("train", "val", "test"):
        assert streamed.size(split) == held.size(split)
        for i in range(streamed.size(split)):
            assert torch.equal(streamed.set(split)[i][0], held.set(split)[i][0]), (split, i)
    corpus_set = streamed.set("train").raw_set.base  # a split of the stream: offsets, no texts, no tensors
    assert isinstance(corpus_set, StreamedTexts) and corpus_set.offsets.dtype == np.int64
    assert set(vars(corpus_set)) == {"path", "offsets", "text_column", "tokenizer_dir", "max_length", "_tokenizer",
                                     "_file"}
    labelled = reviews(tmp_path / "labelled.jsonl")
    with pytest.raises(DataError, match="data.stream is for label-free corpora"):
        build_splits(DataSpec(**{**keys, "path": str(labelled), "label_column": "label"}, stream=True))
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "streamed", "arch": f"hf:{bert}", "task": "embedding", "data": {**keys, "stream": True},
        "student": {"layers": [1, 3]}, "stages": [{"stage": "distill", "epochs": 1}, {"stage": "export"}],
        "targets": []})
    result = invoke("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "streamed: 240 texts" in (tmp_path / "run" / "manifest.json").read_text()
