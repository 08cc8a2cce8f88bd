"""Issue 12: users' data goes in. ImageFolders of PNGs on disk, Hugging Face ``save_to_disk`` datasets
and npz files with their own splits each drive a real compress; the preprocessing is applied and found
in every ONNX file; bad labels, missing arguments and untraceable models fail early with exit 2."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
import torch

from edgekd.config.schema import DataSpec, PreprocessSpec, TrainSpec
from edgekd.data import build_splits
from edgekd.errors import DataError
from edgekd.artifacts.onnx_files import read_metadata
from edgekd.models.zoo import TinyCNN
from edgekd.train.loop import LoopSettings

from .conftest import FAST_LATENCY, invoke, save_model, write_yaml

CLASSES = 10


def digit_images(copies: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 16x16 uint8 images, with shifted copies: a real labelled set."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.nn.functional.interpolate(torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None], size=(16, 16),
                                        mode="bilinear", align_corners=False)[:, 0]
    parts = [torch.roll(x, shifts=k, dims=2) for k in range(copies)]
    images = (torch.cat(parts).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, np.tile(d.target.astype(np.int64), copies)


def write_imagefolder(root, images, labels, splits=(("train", 0.7), ("val", 0.15), ("test", 0.15))):
    from PIL import Image

    order = np.random.default_rng(0).permutation(len(images))
    start, counts = 0, {}
    for name, frac in splits:
        part = order[start:start + int(round(frac * len(images)))]
        start += len(part)
        counts[name] = len(part)
        for i in part:
            folder = root / name / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:05d}.png")
    return counts


def quick_recipe(path, targets, data: dict | None = None, **extra):
    """A short recipe for these data-source tests, whose teachers are untrained (teacher_check off)."""
    return write_yaml(path, {"name": "data", "arch": "edgekd:tiny_cnn", "data": data or {"batch_size": 64},
                             "student": {"width": 0.5}, "teacher_check": False, **extra,
                             "stages": [{"stage": "distill", "epochs": 1, "lr": 0.01},
                                        {"stage": "quantize", "mode": "ptq", "calibration_batches": 2,
                                         "reduce_range": True},
                                        {"stage": "export"}],
                             "targets": [str(t) for t in targets]})


@pytest.fixture(scope="module")
def ort_target(tmp_path_factory):
    return write_yaml(tmp_path_factory.mktemp("t") / "ort.yaml",
                      {"name": "fast-ort", "backend": "onnxruntime", "threads": 1, "latency": FAST_LATENCY})


@pytest.fixture(scope="module")
def teacher10(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(TinyCNN(num_classes=CLASSES), tmp_path_factory.mktemp("t") / "t10.safetensors")


def test_compress_from_an_imagefolder_of_pngs_on_disk(tmp_path, ort_target, teacher10):
    images, labels = digit_images(copies=2)  # 3 594 PNGs
    counts = write_imagefolder(tmp_path / "digits", images, labels)
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target],
                          {"batch_size": 128, "preprocess": {"size": 16, "mean": [0.5], "std": [0.25]}})
    result = invoke("compress", teacher10, "--recipe", recipe, "--data", f"imagefolder:{tmp_path / 'digits'}",
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    data = manifest["data"]
    assert data["source"] == "imagefolder" and data["class_names"] == [str(c) for c in range(CLASSES)]
    assert data["sizes"] == {"train": counts["train"], "val": counts["val"], "test": counts["test"]}
    assert data["splits"]["test"] == "given" and data["preprocess"]["mean"] == [0.5]
    for variant in ("teacher-fp32", "student-fp32", "student-int8"):
        meta = read_metadata(tmp_path / "run" / "models" / f"{variant}.onnx")
        assert meta["preprocess"]["std"] == [0.25] and meta["preprocess"]["size"] == 16
        assert meta["class_names"] == data["class_names"] and meta["input_shape"] == [1, 1, 16, 16]
    rows = json.loads((tmp_path / "run" / "measurements" / "student-int8@fast-ort.json").read_text())
    assert rows["status"] == "ok" and rows["eval_samples"] == counts["test"]


def test_imagefolder_samples_are_preprocessed_as_recorded(tmp_path):
    images, labels = digit_images(copies=1)
    write_imagefolder(tmp_path / "d", images[:300], labels[:300], splits=(("train", 0.6), ("val", 0.2), ("test", 0.2)))
    spec = DataSpec(source="imagefolder", path=str(tmp_path / "d"),
                    preprocess=PreprocessSpec(size=12, resize=14, mean=(0.5,), std=(0.5,), channels=3))
    splits = build_splits(spec)
    x, y, idx = splits.test[0]
    assert x.shape == (3, 12, 12) and float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6
    assert torch.equal(x[0], x[1])  # gray repeated to RGB
    path = splits.test.raw_set.paths[0]
    assert y == int(path.split("/")[-2]) and idx == 0


def test_compress_from_a_hugging_face_save_to_disk_dataset(tmp_path, ort_target, teacher10):
    datasets = pytest.importorskip("datasets", reason="the hf source needs pip install 'edgekd[data]'")
    from PIL import Image

    images, labels = digit_images(copies=1)
    features = datasets.Features({"img": datasets.Image(), "digit": datasets.ClassLabel(names=[f"d{c}" for c in range(10)])})

    def part(sl):
        return datasets.Dataset.from_dict({"img": [Image.fromarray(a, mode="L") for a in images[sl]],
                                           "digit": labels[sl].tolist()}, features=features)

    dd = datasets.DatasetDict({"train": part(slice(0, 1200)), "validation": part(slice(1200, 1500)),
                               "test": part(slice(1500, None))})
    dd.save_to_disk(str(tmp_path / "hf"))
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target], {"batch_size": 128, "image_column": "img",
                                                              "label_column": "digit", "image_size": 16})
    result = invoke("compress", teacher10, "--recipe", recipe, "--data", f"hf:{tmp_path / 'hf'}",
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]
    assert data["sizes"] == {"train": 1200, "val": 300, "test": 297} and data["class_names"][3] == "d3"
    assert read_metadata(tmp_path / "run" / "models" / "student-int8.onnx")["class_names"][3] == "d3"
    rows = json.loads((tmp_path / "run" / "measurements" / "student-fp32@fast-ort.json").read_text())
    assert rows["eval_samples"] == 297


def test_hf_source_names_a_missing_column(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the hf source needs pip install 'edgekd[data]'")
    datasets.Dataset.from_dict({"pixels": [[0.0] * 4] * 8, "label": [0, 1] * 4}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"no column 'image'; columns: pixels, label"):
        build_splits(DataSpec(source="hf", path=str(tmp_path / "hf")))


def test_npz_with_its_own_splits_keeps_the_test_split_and_is_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    x_train, y_train = rng.random((200, 1, 12, 12), dtype=np.float32), rng.integers(0, 3, 200)
    x_test, y_test = rng.random((50, 1, 12, 12), dtype=np.float32), rng.integers(0, 3, 50)
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    splits = build_splits(DataSpec(source="npz", path=str(tmp_path / "d.npz"), image_size=16))
    assert splits.size("test") == 50 and torch.equal(splits.labels("test"), torch.from_numpy(y_test))
    assert splits.size("train") + splits.size("val") == 200 and splits.provenance["splits"]["test"] == "given"
    assert isinstance(splits.test.raw_set.x, np.memmap)  # read from disk sample by sample, not loaded
    assert splits.input_shape == (1, 16, 16)  # image_size is applied to npz data, not just recorded
    first = torch.nn.functional.interpolate(torch.from_numpy(x_test[:1]), size=(16, 16), mode="bilinear",
                                            align_corners=False)[0]
    assert torch.allclose(splits.test[0][0], first, atol=1e-6)


def test_a_compressed_npz_is_read_into_memory_and_says_so(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=np.random.rand(60, 1, 8, 8).astype(np.float32), y=np.arange(60) % 3)
    splits = build_splits(DataSpec(source="npz", path=str(tmp_path / "c.npz")))
    assert "compressed" in splits.provenance["notes"][0] and not isinstance(splits.train.raw_set.base.x, np.memmap)


@pytest.mark.parametrize("labels, message", [
    (np.linspace(0, 2.5, 60), "labels must be integers"),
    (np.array(["a"] * 60), "labels must be integers; got dtype"),
])
def test_bad_labels_are_a_data_error_about_the_data(tmp_path, labels, message):
    np.savez(tmp_path / "b.npz", x=np.random.rand(60, 1, 8, 8).astype(np.float32), y=labels)
    with pytest.raises(DataError, match=message):
        build_splits(DataSpec(source="npz", path=str(tmp_path / "b.npz")))


def test_an_npz_that_is_not_a_zip_or_holds_objects_is_refused(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not an .npz file"):
        build_splits(DataSpec(source="npz", path=str(tmp_path / "x.npz")))
    np.savez(tmp_path / "o.npz", x=np.array([object()] * 20, dtype=object), y=np.zeros(20, dtype=np.int64))
    with pytest.raises(DataError, match="holds Python objects"):
        build_splits(DataSpec(source="npz", path=str(tmp_path / "o.npz")))


def test_imagefolder_val_classes_must_be_train_classes(tmp_path):
    images, labels = digit_images(copies=1)
    write_imagefolder(tmp_path / "d", images[:100], labels[:100], splits=(("train", 0.8), ("val", 0.2)))
    (tmp_path / "d" / "val" / "zebra").mkdir()
    from PIL import Image
    Image.fromarray(images[0], mode="L").save(tmp_path / "d" / "val" / "zebra" / "z.png")
    with pytest.raises(DataError, match="class folder\\(s\\) zebra are not in train/"):
        build_splits(DataSpec(source="imagefolder", path=str(tmp_path / "d")))


def test_a_model_no_part_of_which_traces_fails_in_preflight_before_training(tmp_path, ort_target):
    from tests.models import OpaqueCNN

    torch.manual_seed(0)
    ckpt = save_model(OpaqueCNN(num_classes=4), tmp_path / "opaque.safetensors")
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target], {"source": "synthetic", "samples": 128, "classes": 4,
                                                              "image_size": 16, "batch_size": 32},
                          arch="tests.models:OpaqueCNN")
    began = time.perf_counter()
    result = invoke("compress", ckpt, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "preflight stages.1 (quantize)" in result.output and "cannot be traced" in result.output
    assert "remove it from forward" in result.output and "Traceback" not in result.output
    assert time.perf_counter() - began < 30 and not (tmp_path / "run" / "stages").exists()  # nothing trained


def test_a_model_with_a_shape_check_in_forward_passes_preflight_and_is_quantized_whole():
    """Given the example input (the stage's, and now preflight's), the value tracer follows the check."""
    from edgekd.stages.quantize.quantization import quantize_model
    from edgekd.stages.quantize.stage import check_quantize
    from tests.models import ShapeCheckedCNN

    model, x = ShapeCheckedCNN(num_classes=4).eval(), torch.rand(1, 1, 16, 16)
    check_quantize(model, x, "stages.1")  # raised "cannot be traced" before
    assert quantize_model(model, example=x).quant_mode == "graph"


def test_a_resumed_run_rebuilds_a_shape_checked_models_int8_artifact_as_the_stage_made_it(tmp_path, ort_target):
    """The quantize stage traced the model with the data's example input (its forward checks the shape);
    a resumed export rebuilds the INT8 artifact from its float parent with that same example, so the
    saved weights fit (without it the trace made other modules and the resume failed)."""
    import shutil

    from tests.models import ShapeCheckedCNN

    torch.manual_seed(0)
    ckpt = save_model(ShapeCheckedCNN(num_classes=4), tmp_path / "checked.safetensors")
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "checked", "arch": "tests.models:ShapeCheckedCNN", "teacher_check": False,  # untrained
        "data": {"source": "synthetic", "samples": 128, "classes": 4, "image_size": 16, "batch_size": 32},
        "stages": [{"stage": "quantize", "mode": "ptq", "calibration_batches": 2}, {"stage": "export"}],
        "targets": [str(ort_target)]})
    first = invoke("compress", ckpt, "--recipe", recipe, "--out", tmp_path / "run")
    assert first.exit_code == 0, first.output
    made = (tmp_path / "run" / "stages" / "01-export" / "teacher-int8.onnx").read_bytes()
    shutil.rmtree(tmp_path / "run" / "stages" / "01-export")  # export runs again from the saved INT8 model
    resumed = invoke("compress", ckpt, "--recipe", recipe, "--out", tmp_path / "run", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (tmp_path / "run" / "stages" / "01-export" / "teacher-int8.onnx").read_bytes() == made


def test_arch_args_reach_the_constructor_and_a_missing_one_is_exit_2(tmp_path, ort_target):
    from tests.models import SizedCNN

    torch.manual_seed(0)
    ckpt = save_model(SizedCNN(input_size=16, num_classes=4), tmp_path / "sized.safetensors")
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target], {"source": "synthetic", "samples": 128, "classes": 4,
                                                              "image_size": 16, "batch_size": 32},
                          arch="tests.models:SizedCNN")
    missing = invoke("compress", ckpt, "--recipe", recipe, "--out", tmp_path / "a")
    assert missing.exit_code == 2 and "tests.models:SizedCNN" in missing.output
    assert "input_size" in missing.output and "--arch-arg" in missing.output and "internal error" not in missing.output
    ok = invoke("compress", ckpt, "--recipe", recipe, "--arch-arg", "input_size=16", "--out", tmp_path / "b")
    assert ok.exit_code == 0, ok.output
    resolved = (tmp_path / "b" / "recipe.resolved.yaml").read_text()
    assert "input_size: 16" in resolved


def test_training_resumes_mid_epoch_to_the_same_weights(tmp_path, monkeypatch):
    """Issue 12.6: with checkpoint_every, a run killed inside an epoch continues from its last save
    (not the epoch start) and ends with exactly the weights of an uninterrupted run on the CPU."""
    import edgekd.train.loop as loop
    from edgekd.train.objective import Objective

    splits = build_splits(DataSpec(source="synthetic", samples=160, classes=3, image_size=8, batch_size=16))
    state = tmp_path / "state.pt"

    def run(**kw):
        torch.manual_seed(0)
        model = TinyCNN(num_classes=3)
        result = loop.fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=2, lr=0.01, weight_decay=0.0), LoopSettings(seed=0, augment=None, **kw), label="unit")
        return model, result

    reference, _ = run()
    steps = []
    real = Objective.after_step

    def dies_at_step_7(self, values, batch):
        steps.append(1)
        if len(steps) == 7:
            raise KeyboardInterrupt
        return real(self, values, batch)

    monkeypatch.setattr(Objective, "after_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run(state_path=state, state_key="k", checkpoint_every=3)
    monkeypatch.setattr(Objective, "after_step", real)
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 0 and saved["step"] == 6  # the last save: after step 6 of epoch 1
    resumed, result = run(state_path=state, state_key="k", checkpoint_every=3)
    assert result.resumed_from_step == 6
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))


def test_shift_augmentation_fills_with_normalised_black():
    from edgekd.config.schema import Augment
    from edgekd.data import augment_batch

    x = torch.full((4, 1, 6, 6), 3.0)
    fill = torch.tensor([-2.0])  # what black becomes after (0 - 0.5) / 0.25
    out = augment_batch(x, Augment(shift=2), torch.Generator().manual_seed(0), fill)
    assert set(out.unique().tolist()) <= {3.0, -2.0} and (out == -2.0).any()


def test_caps_take_seeded_subsets_and_list_sources_names_every_source():
    full = build_splits(DataSpec())
    capped = build_splits(DataSpec(max_train_samples=100, max_eval_samples=50))
    assert (capped.size("train"), capped.size("val"), capped.size("test")) == (100, 50, 50)
    assert full.size("test") == 359
    listing = invoke("list", "sources")
    assert listing.exit_code == 0
    for name in ("digits", "synthetic", "npz", "imagefolder", "hf", "factory"):
        assert f"{name}:" in listing.output


def test_random_resized_crop_is_seeded_keeps_the_size_and_changes_the_batch():
    from edgekd.config.schema import Augment
    from edgekd.data import augment_batch

    x = torch.rand(6, 3, 16, 16)
    spec = Augment(crop_scale=(0.3, 0.6), hflip=True)
    a = augment_batch(x, spec, torch.Generator().manual_seed(0))
    b = augment_batch(x, spec, torch.Generator().manual_seed(0))
    c = augment_batch(x, spec, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    with pytest.raises(ValueError, match="0 < low <= high"):
        Augment(crop_scale=(0.8, 0.2))


def test_a_cuda_device_where_torch_sees_none_is_exit_2(tmp_path, ort_target):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal cannot be shown here")
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target], {"source": "synthetic", "samples": 64, "classes": 4,
                                                              "image_size": 16, "batch_size": 32})
    result = invoke("compress", "--recipe", recipe, "--device", "cuda", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "torch sees no CUDA GPU" in result.output and "Traceback" not in result.output


def test_compress_trains_on_cuda_and_exports_from_the_cpu(tmp_path, ort_target):
    """Issue 12.4: the CUDA path (autocast, channels-last, teacher outputs and QAT on the GPU)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: the CUDA training path runs on a GPU machine only")
    torch.manual_seed(0)
    ckpt = save_model(TinyCNN(num_classes=4), tmp_path / "t.safetensors")
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "cuda", "arch": "edgekd:tiny_cnn", "device": "cuda",
        "data": {"source": "synthetic", "samples": 256, "classes": 4, "image_size": 16, "batch_size": 32},
        "stages": [{"stage": "distill", "epochs": 2, "lr": 0.01},
                   {"stage": "quantize", "mode": "qat", "epochs": 1, "calibration_batches": 2},
                   {"stage": "export"}], "targets": [str(ort_target)]})
    result = invoke("compress", ckpt, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["training_device"]["device"].startswith("cuda")
    stage = json.loads((tmp_path / "run" / "stages" / "00-distill" / "stage.json").read_text())
    assert stage["artifacts"][0]["meta"]["metrics"]["device"].startswith("cuda")


def test_compress_from_an_npz_with_its_own_splits_scores_its_test_split(tmp_path, ort_target, teacher10):
    """The npz's own x_test is what every backend is scored on, resized by the recorded preprocessing."""
    images, labels = digit_images(copies=1)
    x = images[:, None]  # uint8 (N, 1, 16, 16): scaled to [0, 1] when read
    np.savez(tmp_path / "d.npz", x_train=x[:1200], y_train=labels[:1200], x_val=x[1200:1500],
             y_val=labels[1200:1500], x_test=x[1500:1650], y_test=labels[1500:1650])
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target], {"batch_size": 64, "image_size": 20})
    result = invoke("compress", teacher10, "--recipe", recipe, "--data", f"npz:{tmp_path / 'd.npz'}",
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]
    assert data["sizes"] == {"train": 1200, "val": 300, "test": 150} and data["splits"]["test"] == "given"
    meta = read_metadata(tmp_path / "run" / "models" / "student-int8.onnx")
    assert meta["preprocess"]["size"] == 20 and meta["input_shape"] == [1, 1, 20, 20]
    graph_input = onnx.load(str(tmp_path / "run" / "models" / "student-fp32.onnx")).graph.input[0]
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [1, 1, 20, 20]
    for variant in ("teacher-fp32", "student-int8"):
        row = json.loads((tmp_path / "run" / "measurements" / f"{variant}@fast-ort.json").read_text())
        assert row["status"] == "ok" and row["eval_samples"] == 150


def test_a_recipe_may_leave_the_data_path_to_the_command_line(tmp_path, ort_target, teacher10):
    """--data edits the recipe file's raw data block before it is validated: a recipe written for
    `--data imagefolder:DIR` names the source and its preprocessing, not the folder."""
    recipe = quick_recipe(tmp_path / "r.yaml", [ort_target], {"source": "imagefolder", "batch_size": 16,
                                                              "preprocess": {"size": 24}})
    without = invoke("compress", "--recipe", recipe, "--out", tmp_path / "a", "--dry-run")
    assert without.exit_code == 2 and "source 'imagefolder' needs 'path'" in without.output
    images, labels = digit_images(copies=1)
    write_imagefolder(tmp_path / "img", images[:400], labels[:400])  # --dry-run opens the data, so it must exist
    given = invoke("compress", teacher10, "--recipe", recipe, "--data", f"imagefolder:{tmp_path / 'img'}", "--out",
                   tmp_path / "b", "--dry-run")
    assert given.exit_code == 0, given.output
    resolved = (tmp_path / "b" / "recipe.resolved.yaml").read_text()
    assert f"path: {tmp_path / 'img'}" in resolved and "size: 24" in resolved and "batch_size: 16" in resolved


def test_mean_and_std_must_match_the_channels(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.random.rand(40, 1, 8, 8).astype(np.float32), y=np.arange(40) % 2)
    spec = DataSpec(source="npz", path=str(tmp_path / "g.npz"),
                    preprocess=PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)))
    with pytest.raises(DataError, match="mean/std have 3 values, the samples 1 channel"):
        build_splits(spec)
    rgb = build_splits(spec.model_copy(update={"preprocess": PreprocessSpec(mean=(0.5,) * 3, std=(0.2,) * 3,
                                                                            channels=3)}))
    assert rgb.input_shape == (3, 8, 8)
